#!/usr/bin/env python3
"""The web client in a real browser: two headless Chromium sessions chat through a relay.

Run by Tests/browser/run.sh, which starts the relay and gives:
  RELAY_URL    the relay's base URL (dev mode)
  BROWSER_OUT  where screenshots go (chat.png, chat-bob.png; failure-*.png on failure)
Optional: CHROMIUM_BIN (/usr/bin/chromium), CHROMEDRIVER_BIN (/usr/bin/chromedriver),
BROWSER_WAIT_S (10: the bound of every wait).

First relay_unit.js checks relay.js in the page against a scripted fake server. Then: alice and
bob sign in; alice opens a DM with bob and writes, bob sees it live (with an unread count) and
answers; alice reloads while bob writes, and again after being away, and sees exactly the whole
conversation once; bob creates a group, they exchange a message there; alice edits a message and
bob deletes one, and each sees the other's change; alice's socket drops while she sends; a bad
token signs the app out; carol, added to the group after 70 more messages, pages its history in
by scrolling up.
"""

import json
import os
import secrets
import sys
import time
import traceback
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

BASE = os.environ["RELAY_URL"].rstrip("/")
OUT = os.environ.get("BROWSER_OUT", ".build/browser")
WAIT_S = float(os.environ.get("BROWSER_WAIT_S", "10"))

# One snapshot of the open channel's message rows, taken in the page in one go.
ROWS_JS = """
return [...document.querySelectorAll('#message-list li[data-kind="message"]')].map((li) => ({
  text: li.querySelector('.text').textContent,
  state: li.dataset.state,
  deleted: li.dataset.deleted === 'true',
  edited: li.dataset.edited === 'true',
  seq: li.dataset.seq || null,
  id: li.dataset.messageId || null,
  sender: li.dataset.sender,
}));
"""


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Browser:
    """One headless Chromium session (its own profile, so its own localStorage) and one user."""

    def __init__(self, name):
        self.name = name
        options = Options()
        options.binary_location = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1100,760",
            "--no-first-run",
            "--disable-extensions",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = Service(os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver"))
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.set_page_load_timeout(WAIT_S * 2)
        self.driver.set_script_timeout(WAIT_S)
        self.console = []

    # MARK: waiting

    def wait(self, condition, what, timeout=None):
        """Waits until condition() is truthy (and returns it); fails naming `what` and the last value seen."""
        last = [None]

        def probe(_):
            try:
                last[0] = condition()
            except WebDriverException as error:  # e.g. a script run while the page navigates
                last[0] = f"{type(error).__name__}: {error.msg}"
                return False
            return last[0]

        try:
            return WebDriverWait(self.driver, timeout or WAIT_S, poll_frequency=0.1).until(probe)
        except TimeoutException:
            raise AssertionError(f"{self.name}: timed out waiting for {what}; last seen: {last[0]!r}") from None

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def present(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    # MARK: actions

    def open_app(self, fragment=""):
        self.driver.get(BASE + "/" + fragment)

    def sign_in(self, user):
        self.open_app()
        self.wait(lambda: self.find("#signin-name").is_displayed(), "the sign-in form")
        self.find("#signin-name").send_keys(user)
        self.find("#signin-submit").click()
        self.wait_connected()
        assert self.find("#me").text == user, self.find("#me").text

    def wait_connected(self):
        self.wait(lambda: self.present('#app:not([hidden]) #conn-state[data-state="open"]'), "the connection to open")

    def open_channel_in_list(self, channel_id):
        css = f'#channel-list li[data-channel-id="{channel_id}"] a'
        self.wait(lambda: self.present(css), f"{channel_id} in the channel list")
        self.find(css).click()
        self.wait_open(channel_id)

    def wait_open(self, channel_id):
        self.wait(
            lambda: self.js("return document.getElementById('channel-view').dataset.channelId") == channel_id,
            f"{channel_id} to be the open channel",
        )

    def open_channel_id(self):
        return self.js("return document.getElementById('channel-view').dataset.channelId")

    def send(self, text):
        box = self.find("#composer-input")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)

    def rows(self):
        return self.js(ROWS_JS)

    def texts(self):
        return [row["text"] for row in self.rows()]

    def wait_texts(self, expected, what="messages"):
        """Waits until the view shows exactly `expected` (all sent, none pending), then checks it stays so."""

        last = [None]

        def settled():
            rows = self.rows()
            last[0] = [(r["text"], r["state"]) for r in rows]
            return [r["text"] for r in rows] == expected and all(r["state"] == "sent" for r in rows) and rows

        try:
            self.wait(settled, what)
        except AssertionError:
            raise AssertionError(f"{self.name}: timed out waiting for {what}: {expected!r}; shown: {last[0]!r}") from None
        time.sleep(0.4)  # a duplicate or a late replay would show up now
        rows = self.rows()
        assert [r["text"] for r in rows] == expected, f"{self.name}: {what} changed to {[r['text'] for r in rows]!r}"
        ids = [r["id"] for r in rows]
        seqs = [int(r["seq"]) for r in rows]
        assert len(set(ids)) == len(ids), f"{self.name}: duplicate message ids {ids}"
        assert seqs == sorted(set(seqs)), f"{self.name}: seqs not strictly increasing {seqs}"
        return rows

    def row(self, text):
        for element in self.present('#message-list li[data-kind="message"]'):
            if element.find_element(By.CSS_SELECTOR, ".text").text == text:
                return element
        raise AssertionError(f"{self.name}: no message {text!r} in {self.texts()!r}")

    def auth(self):
        return json.loads(self.js("return localStorage.getItem('relay.auth')"))

    def collect_console(self):
        try:
            self.console += self.driver.get_log("browser")
        except Exception:  # noqa: BLE001 - the session may be gone already
            pass
        return self.console

    def screenshot(self, name):
        path = os.path.join(OUT, name)
        try:
            self.driver.save_screenshot(path)
            log(f"screenshot: {path}")
        except Exception as error:  # noqa: BLE001
            log(f"{self.name}: no screenshot ({error})")

    def quit(self):
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001
            pass


def rest(method, path, token, body=None):
    request = urllib.request.Request(BASE + path, method=method, headers={"Authorization": f"Bearer {token}"})
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=WAIT_S) as response:
        return json.loads(response.read())


def wait_for(condition, what):
    deadline = time.monotonic() + WAIT_S
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def library_checks(browser):
    """Runs relay_unit.js (relay.js against a scripted fake server) in the page; fails on any failed check."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "relay_unit.js"), encoding="utf-8") as file:
        script = file.read()
    browser.open_app()
    browser.wait(lambda: browser.present("#signin:not([hidden])"), "the sign-in form")
    browser.driver.set_script_timeout(30)
    try:
        result = browser.driver.execute_async_script(script)
    finally:
        browser.driver.set_script_timeout(WAIT_S)
    for name in result["passed"]:
        log(f"  relay.js: {name}")
    assert not result["failed"], "relay.js checks failed:\n  " + "\n  ".join(result["failed"])


def scenario(alice, bob, a_name, b_name):
    step = lambda text: log(text)  # noqa: E731

    step("relay.js against a scripted server")
    library_checks(bob)

    step("sign in")
    alice.sign_in(a_name)
    bob.sign_in(b_name)

    step("alice opens a DM with bob and writes")
    alice.find("#dm-user").send_keys(b_name)
    alice.find("#dm-open").click()
    dm = alice.wait(lambda: (alice.open_channel_id() or "").startswith("dm-") and alice.open_channel_id(), "the DM to open")
    alice.send("hello bob")
    alice.wait_texts(["hello bob"])

    step("bob sees the DM live, with its unread count, and opens it")
    unread_css = f'#channel-list li[data-channel-id="{dm}"]:not([data-unread="0"])'
    bob.wait(lambda: bob.present(unread_css), "the DM with an unread count in bob's list")
    name = bob.find(f'#channel-list li[data-channel-id="{dm}"] .name').text
    assert name == a_name, f"bob's DM is named {name!r}, not {a_name!r}"
    bob.open_channel_in_list(dm)
    bob.wait_texts(["hello bob"])
    bob_token = bob.auth()["token"]
    wait_for(
        lambda: next(c for c in rest("GET", "/channels", bob_token)["channels"] if c["id"] == dm)["unread"] == 0,
        "bob's DM to be marked read on the relay",
    )

    step("they talk live, and markup stays text")
    alice.send("how are you?")
    bob.wait_texts(["hello bob", "how are you?"])
    tricky = '<img src=x onerror="window.__pwned=1"> & <b>not bold</b>'
    bob.send("fine, thanks — ça va? ✓")
    bob.send(tricky)
    conversation = ["hello bob", "how are you?", "fine, thanks — ça va? ✓", tricky]
    alice.wait_texts(conversation)
    bob.wait_texts(conversation)
    assert not alice.present("#message-list img, #message-list b"), "user text was parsed as HTML"
    assert alice.js("return window.__pwned") is None, "user text ran as script"

    step("presence: each sees the other online")
    alice.wait(
        lambda: alice.present(f'#channel-list li[data-channel-id="{dm}"] .dot[data-presence="online"]'),
        "bob's presence dot to be online",
        timeout=WAIT_S + 10,
    )
    bob.wait(
        lambda: bob.present(f'#channel-members li[data-user="{a_name}"] .dot[data-presence="online"]'),
        "alice's presence dot to be online",
        timeout=WAIT_S + 10,
    )

    step("alice reloads while bob writes")
    cursors = alice.js("return Object.keys(localStorage).filter((k) => k.startsWith('relay.cursors.'))")
    assert cursors, "alice's page kept no cursors in localStorage"
    alice.js("window.__before_reload = true; setTimeout(() => location.reload(), 0)")
    bob.send("sent during the reload")
    conversation.append("sent during the reload")
    bob.wait_texts(conversation)
    alice.wait(lambda: alice.js("return document.readyState === 'complete' && !window.__before_reload"), "the reload")
    alice.wait_connected()
    alice.wait_open(dm)
    alice.wait_texts(conversation, "the conversation after the reload")

    step("alice leaves the page, bob writes twice, alice comes back")
    alice.driver.get("about:blank")
    bob.send("while you were away 1")
    bob.send("while you were away 2")
    conversation += ["while you were away 1", "while you were away 2"]
    bob.wait_texts(conversation)
    alice.open_app(f"#/c/{dm}")
    alice.wait_connected()
    alice.wait_open(dm)
    bob.send("welcome back")
    conversation.append("welcome back")
    alice.wait_texts(conversation, "the conversation after coming back")
    bob.wait_texts(conversation)

    step("bob creates a group with alice")
    group_name = "team " + secrets.token_hex(2)
    bob.find("#group-name").send_keys(group_name)
    bob.find("#group-members").send_keys(a_name)
    bob.find("#group-create").click()
    group = bob.wait(
        lambda: (bob.open_channel_id() or "") not in ("", dm) and bob.open_channel_id(), "the group to open"
    )
    bob.send("hi team")
    bob.wait_texts(["hi team"])
    alice.wait(
        lambda: alice.present(f'#channel-list li[data-channel-id="{group}"][data-type="group"]'), "the group in alice's list"
    )
    assert alice.find(f'#channel-list li[data-channel-id="{group}"] .name').text == "# " + group_name
    alice.open_channel_in_list(group)
    alice.wait_texts(["hi team"])
    alice.send("hey bob")
    bob.wait_texts(["hi team", "hey bob"])
    alice.wait_texts(["hi team", "hey bob"])

    step("alice edits her message, bob sees the edit")
    alice.row("hey bob").find_element(By.CSS_SELECTOR, 'button[data-action="edit"]').click()
    edit = alice.wait(lambda: alice.present("#message-list .edit-input"), "the edit box")[0]
    edit.send_keys(Keys.CONTROL, "a")
    edit.send_keys("hey bob, edited")
    edit.send_keys(Keys.ENTER)
    for who in (alice, bob):
        rows = who.wait_texts(["hi team", "hey bob, edited"], "the edited message")
        assert rows[1]["edited"] and not rows[0]["edited"], rows

    step("bob deletes his message, alice sees it go")
    bob.row("hi team").find_element(By.CSS_SELECTOR, 'button[data-action="delete"]').click()
    for who in (alice, bob):
        rows = who.wait_texts(["This message was deleted.", "hey bob, edited"], "the deletion")
        assert rows[0]["deleted"] and not rows[1]["deleted"], rows
    assert not bob.row("This message was deleted.").find_elements(By.CSS_SELECTOR, ".actions:not([hidden])")

    step("back in the DM, history is intact")
    for who in (alice, bob):
        who.open_channel_in_list(dm)
        who.wait_texts(conversation)
        # Everything in the group was seen there: nothing unread once they left it.
        who.wait(lambda w=who: w.present(f'#channel-list li[data-channel-id="{group}"][data-unread="0"]'), "group read")
    for who in (alice, bob):
        assert who.present('#conn-state[data-state="open"]'), f"{who.name} is not connected at the end"

    step("alice's socket drops; she sends while it is down; it reconnects and resumes")
    states = "window.__states = []; relayClient.on('state', (s) => window.__states.push(s.state));"
    alice.js(states + "relayClient._socket.close();")
    alice.send("sent while offline")
    bob.send("sent while alice reconnects")
    conversation += ["sent while offline", "sent while alice reconnects"]

    def reconnected():
        states = alice.js("return window.__states") or []
        return "reconnecting" in states and states[-1] == "open" and states

    seen = alice.wait(reconnected, "alice to reconnect")
    assert seen[0] == "reconnecting", f"alice's states: {seen}"
    # The two messages were sent at once, so either order is fine; each exactly once.
    for who in (alice, bob):
        texts = who.wait(lambda w=who: len(w.texts()) == len(conversation) and w.texts(), "both new messages")
        assert sorted(texts[-2:]) == sorted(conversation[-2:]), texts
        conversation[-2:] = texts[-2:]
        who.wait_texts(conversation)

    alice.screenshot("chat.png")
    bob.screenshot("chat-bob.png")

    step("carol is added to the group; bob posts 70 messages there over REST")
    c_name = a_name.replace("alice", "carol")
    rest("POST", f"/channels/{group}/members", bob_token, {"user_id": c_name})
    fillers = [f"filler {n}" for n in range(1, 71)]
    for n, text in enumerate(fillers):
        rest("POST", f"/channels/{group}/messages", bob_token, {"client_msg_id": f"filler-{n}", "text": text})
    everything = ["This message was deleted.", "hey bob, edited"] + fillers
    bob.open_channel_in_list(group)
    bob.wait_texts(everything)

    step("a bad token: the app signs out")
    alice.js(
        "localStorage.setItem('relay.auth', JSON.stringify({token: 'not-a-token', user_id: 'x', session_id: 'y'}))"
    )
    alice.open_app()
    alice.wait(lambda: alice.present("#signin:not([hidden])"), "the sign-in form after a bad token")
    message = alice.find("#signin-error").text
    assert "session ended" in message, message

    step("carol signs in, opens the group: the latest page, then older ones on scroll up")
    carol = alice
    carol.name = "carol"
    carol.sign_in(c_name)
    carol.wait(
        lambda: carol.present(f'#channel-list li[data-channel-id="{group}"]:not([data-unread="0"])'),
        "the group, unread, in carol's list",
    )
    carol.open_channel_in_list(group)
    carol.wait_texts(fillers[-50:], "the latest page")  # the newest 50 events are all fillers
    carol.js("document.getElementById('messages').scrollTop = 0")
    carol.wait_texts(everything, "the whole history after scrolling up")
    assert carol.js("return document.getElementById('messages').scrollTop") > 0, "the view jumped to the top"


def main():
    os.makedirs(OUT, exist_ok=True)
    suffix = secrets.token_hex(3)
    a_name, b_name = f"alice-{suffix}", f"bob-{suffix}"
    started = time.monotonic()
    browsers = []
    failed = False
    try:
        alice = Browser("alice")
        browsers.append(alice)
        bob = Browser("bob")
        browsers.append(bob)
        log(f"browsers up ({time.monotonic() - started:.1f}s); relay {BASE}; users {a_name}, {b_name}")
        scenario(alice, bob, a_name, b_name)
        errors = [
            entry
            for b in browsers
            for entry in b.collect_console()
            if entry.get("level") == "SEVERE" and "Uncaught" in entry.get("message", "")
        ]
        assert not errors, f"uncaught script errors: {errors}"
    except Exception:  # noqa: BLE001 - report anything, then fail
        failed = True
        traceback.print_exc()
        for b in browsers:
            b.screenshot(f"failure-{b.name}.png")
            for entry in b.collect_console():
                print(f"  {b.name} console {entry.get('level')}: {entry.get('message')}", file=sys.stderr)
    finally:
        for b in browsers:
            b.quit()
    elapsed = time.monotonic() - started
    if failed:
        log(f"FAILED after {elapsed:.1f}s")
        return 1
    log(f"passed in {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
