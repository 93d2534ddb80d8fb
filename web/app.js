// The relay's web client: sign in (dev tokens), channels with unread counts, DMs and groups,
// messages with history paging, edit and delete, presence. All user text goes through
// textContent, never innerHTML.
import { RelayClient, devToken } from "/relay.js";

const $ = (id) => document.getElementById(id);
const ID = /^[A-Za-z0-9._-]{1,64}$/;
const PAGE = 50;
const AUTH_KEY = "relay.auth";
const PRESENCE_EVERY_MS = 10000;

let client = null;
let me = null;
let openId = null;
const channels = new Map(); // id -> { id, type, name, member_count, last_seq, last_read_seq, unread }
const details = new Map(); // id -> GET /channels/{id}
const presence = new Map(); // user -> "online" | "offline"
const stores = new Map(); // id -> { events: Map(seq -> event), loaded, loading, pending: Map(client_msg_id -> row) }
let presenceTimer = null;

// MARK: sign in / out

function savedAuth() {
  try {
    const auth = JSON.parse(localStorage.getItem(AUTH_KEY) || "null");
    return auth && auth.token && auth.user_id ? auth : null;
  } catch {
    return null;
  }
}

function showSignIn(message = "") {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("signin-name").focus();
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("signin-name").value.trim();
  if (!ID.test(name)) {
    $("signin-error").textContent = "A name is 1 to 64 letters, digits, dots, underscores or dashes.";
    return;
  }
  $("signin-submit").disabled = true;
  try {
    const session = "web-" + Math.random().toString(36).slice(2, 10);
    const auth = await devToken(name, { sessionId: session });
    localStorage.setItem(AUTH_KEY, JSON.stringify(auth));
    start(auth);
  } catch (error) {
    $("signin-error").textContent =
      error.status === 404 ? "This relay does not hand out dev tokens (it runs without --dev)." : `Sign-in failed: ${error.message}`;
  } finally {
    $("signin-submit").disabled = false;
  }
});

$("signout").addEventListener("click", () => signOut(""));

function signOut(message) {
  localStorage.removeItem(AUTH_KEY);
  if (client) client.close();
  client = null;
  globalThis.relayClient = null;
  clearInterval(presenceTimer);
  channels.clear();
  details.clear();
  stores.clear();
  presence.clear();
  openId = null;
  history.replaceState(null, "", location.pathname);
  $("channel-list").replaceChildren();
  $("message-list").replaceChildren();
  showSignIn(message);
}

function start(auth) {
  me = auth.user_id;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("me").textContent = me;
  client = new RelayClient({ token: auth.token });
  globalThis.relayClient = client; // for the console (and the browser test)
  client.on("state", onState);
  client.on("event", onEvent);
  client.on("read", onRead);
  client.on("error", (frame) => console.warn("relay:", frame.code, frame.message || ""));
  client.connect();
  refreshChannels().then(() => openFromHash());
  clearInterval(presenceTimer);
  presenceTimer = setInterval(refreshPresence, PRESENCE_EVERY_MS);
}

// MARK: connection state

function onState({ state }) {
  const label = { idle: "idle", connecting: "connecting…", open: "online", reconnecting: "reconnecting…", closed: "offline", unauthorized: "signed out" };
  const el = $("conn-state");
  el.dataset.state = state;
  el.textContent = label[state] || state;
  if (state === "open") {
    // Things may have changed while the socket was away (new channels, reads from elsewhere).
    refreshChannels();
    refreshPresence();
  } else if (state === "unauthorized") {
    signOut("Your session ended (the token is invalid or expired). Sign in again.");
  }
}

// MARK: channels

let refreshing = null;
let refreshAgain = false;

async function refreshChannels() {
  if (!client) return;
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      refreshAgain = false;
      if (!client) break; // signed out meanwhile
      try {
        const list = await client.listChannels();
        const ids = new Set(list.map((c) => c.id));
        for (const id of [...channels.keys()]) if (!ids.has(id)) channels.delete(id);
        for (const summary of list) {
          const known = channels.get(summary.id);
          // Live events may already be ahead of this answer.
          if (known) {
            summary.last_seq = Math.max(summary.last_seq, known.last_seq);
            summary.last_read_seq = Math.max(summary.last_read_seq, known.last_read_seq);
          }
          summary.unread = Math.max(0, summary.last_seq - summary.last_read_seq);
          channels.set(summary.id, summary);
          if (summary.type === "dm" && !details.has(summary.id)) loadDetails(summary.id);
        }
        if (openId && !channels.has(openId)) closeChannel();
      } catch (error) {
        if (error.status !== 401) showSidebarError(`Could not load channels: ${error.message}`);
      }
    } while (refreshAgain);
    refreshing = null;
    renderChannels();
  })();
  return refreshing;
}

async function loadDetails(id) {
  try {
    const info = await client.getChannel(id);
    details.set(id, info);
    renderChannels();
    if (id === openId) renderHeader();
    refreshPresence();
  } catch {
    // A channel just left, or a passing failure: the next refresh tries again.
  }
}

function displayName(id) {
  const summary = channels.get(id);
  const info = details.get(id);
  if ((summary?.type || info?.type) === "dm") {
    const peer = dmPeer(id);
    return peer ? peer : "direct message";
  }
  return summary?.name || info?.name || id;
}

function dmPeer(id) {
  const info = details.get(id);
  if (!info) return null;
  return (info.members || []).find((m) => m !== me) || me;
}

function renderChannels() {
  const list = $("channel-list");
  const sorted = [...channels.values()].sort(
    (a, b) => (a.type === b.type ? 0 : a.type === "group" ? -1 : 1) || displayName(a.id).localeCompare(displayName(b.id))
  );
  const nodes = sorted.map((summary) => {
    let li = list.querySelector(`li[data-channel-id="${CSS.escape(summary.id)}"]`);
    if (!li) {
      li = document.createElement("li");
      li.className = "channel";
      li.dataset.channelId = summary.id;
      const a = document.createElement("a");
      a.href = "#/c/" + encodeURIComponent(summary.id);
      const dot = document.createElement("span");
      dot.className = "dot";
      const name = document.createElement("span");
      name.className = "name";
      const badge = document.createElement("span");
      badge.className = "badge";
      a.append(dot, name, badge);
      li.append(a);
    }
    const unread = summary.id === openId ? 0 : summary.unread;
    li.dataset.type = summary.type;
    li.dataset.unread = String(unread);
    li.classList.toggle("active", summary.id === openId);
    li.querySelector(".name").textContent = summary.type === "dm" ? displayName(summary.id) : "# " + displayName(summary.id);
    const badge = li.querySelector(".badge");
    badge.textContent = unread > 0 ? String(unread) : "";
    badge.hidden = unread <= 0;
    const dot = li.querySelector(".dot");
    const peer = summary.type === "dm" ? dmPeer(summary.id) : null;
    dot.hidden = !peer;
    dot.dataset.presence = peer ? presence.get(peer) || "unknown" : "";
    if (peer) dot.title = `${peer} is ${presence.get(peer) || "…"}`;
    return li;
  });
  list.replaceChildren(...nodes);
  $("no-channels").hidden = nodes.length > 0;
}

function showSidebarError(message) {
  $("sidebar-error").textContent = message;
  clearTimeout(showSidebarError.timer);
  showSidebarError.timer = setTimeout(() => ($("sidebar-error").textContent = ""), 6000);
}

$("dm-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const user = $("dm-user").value.trim();
  if (!ID.test(user)) return showSidebarError("A user name is 1 to 64 letters, digits, dots, underscores or dashes.");
  if (user === me) return showSidebarError("A direct message needs someone else.");
  try {
    const channel = await client.createDM(user);
    details.set(channel.id, channel);
    $("dm-user").value = "";
    await refreshChannels();
    navigate(channel.id);
  } catch (error) {
    showSidebarError(`Could not open the DM: ${error.message}`);
  }
});

$("group-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("group-name").value.trim();
  const members = $("group-members")
    .value.split(/[\s,]+/)
    .filter(Boolean);
  const bad = members.find((m) => !ID.test(m));
  if (bad) return showSidebarError(`Not a user name: ${bad}`);
  try {
    const channel = await client.createGroup({ name, members });
    details.set(channel.id, channel);
    $("group-name").value = "";
    $("group-members").value = "";
    await refreshChannels();
    navigate(channel.id);
  } catch (error) {
    showSidebarError(`Could not create the group: ${error.message}`);
  }
});

// MARK: presence

async function refreshPresence() {
  if (!client || client.state === "unauthorized") return;
  const users = new Set();
  for (const id of channels.keys()) {
    const peer = channels.get(id).type === "dm" ? dmPeer(id) : null;
    if (peer) users.add(peer);
  }
  if (openId && details.has(openId)) (details.get(openId).members || []).slice(0, 200).forEach((m) => users.add(m));
  users.delete(me);
  if (users.size === 0) return;
  try {
    const states = await client.presence([...users].slice(0, 1000));
    for (const [user, state] of Object.entries(states)) presence.set(user, state);
    renderChannels();
    renderHeader();
  } catch {
    // Shown as it was; the next round tries again.
  }
}

// MARK: events

function storeFor(id) {
  let store = stores.get(id);
  if (!store) stores.set(id, (store = { events: new Map(), loaded: false, loading: false, pending: new Map(), firstSeq: 1 }));
  return store;
}

function remember(event) {
  const store = storeFor(event.channel_id);
  store.events.set(event.seq, event);
  if (event.type === "message" && event.sender_id === me) store.pending.delete(event.client_msg_id);
  return store;
}

function onEvent(event) {
  remember(event);
  const id = event.channel_id;
  const summary = channels.get(id);
  if (summary) {
    summary.last_seq = Math.max(summary.last_seq, event.seq);
    summary.unread = Math.max(0, summary.last_seq - summary.last_read_seq);
  } else {
    refreshChannels();
  }
  if (event.type === "member_joined" || event.type === "member_left") {
    if (event.type === "member_left" && event.user_id === me) {
      details.delete(id);
      refreshChannels();
    } else {
      loadDetails(id);
    }
  }
  if (id === openId) {
    scheduleRender();
    scheduleMarkRead();
  }
  scheduleChannelsRender();
}

function onRead({ channel_id, last_read_seq }) {
  const summary = channels.get(channel_id);
  if (!summary) return;
  summary.last_read_seq = Math.max(summary.last_read_seq, last_read_seq);
  summary.unread = Math.max(0, summary.last_seq - summary.last_read_seq);
  scheduleChannelsRender();
}

let channelsRenderQueued = false;
function scheduleChannelsRender() {
  if (channelsRenderQueued) return;
  channelsRenderQueued = true;
  requestAnimationFrame(() => {
    channelsRenderQueued = false;
    renderChannels();
  });
}

// MARK: the open channel

function navigate(id) {
  const hash = "#/c/" + encodeURIComponent(id);
  if (location.hash === hash) openChannel(id);
  else location.hash = hash;
}

function openFromHash() {
  const match = /^#\/c\/(.+)$/.exec(location.hash);
  const id = match ? decodeURIComponent(match[1]) : null;
  if (id && ID.test(id)) openChannel(id);
  else closeChannel();
}

window.addEventListener("hashchange", openFromHash);

function closeChannel() {
  openId = null;
  $("channel-view").dataset.channelId = "";
  $("channel-title").textContent = "No channel open";
  $("channel-members").replaceChildren();
  $("message-list").replaceChildren();
  setHistoryState("idle", "Pick a channel on the left, open a DM or create a group.");
  $("composer").hidden = true;
  renderChannels();
}

async function openChannel(id) {
  if (!client) return;
  if (openId !== id) {
    flushMarkRead();
    setHistoryState("idle", "");
    openId = id;
    $("channel-view").dataset.channelId = id;
    $("message-list").replaceChildren();
    stickToBottom = true;
  }
  $("composer").hidden = false;
  renderHeader();
  renderChannels();
  if (!details.has(id)) loadDetails(id);
  const store = storeFor(id);
  render();
  if (!store.loaded) await loadLatest(id);
  if (openId !== id) return;
  $("composer-input").focus();
  refreshPresence();
  scheduleMarkRead();
}

async function loadLatest(id) {
  const store = storeFor(id);
  if (store.loading) return;
  store.loading = true;
  setHistoryState("loading", "Loading…");
  try {
    const page = await client.history(id, { limit: PAGE });
    page.messages.forEach(remember);
    store.loaded = true;
    store.firstSeq = page.first_seq ?? 1;
    if (page.messages.length) client.seen(id, page.messages[page.messages.length - 1].seq);
    setHistoryState("idle", "");
    if (!page.has_more && store.firstSeq > 1) setHistoryState("idle", EARLIER_NOT_KEPT);
  } catch (error) {
    if (error.status === 403 || error.status === 404) {
      setHistoryState("error", "You are not a member of this channel.");
      $("composer").hidden = true;
    } else {
      setHistoryState("error", `Could not load messages: ${error.message}`);
    }
  } finally {
    store.loading = false;
  }
  if (id === openId) render();
}

/** What the history pane says once it reaches the start of a log that retention trimmed. */
const EARLIER_NOT_KEPT = "Earlier messages are no longer kept.";

/** The lowest seq held: everything from it up to the top is held (pages and live events are contiguous). */
function lowestSeq(store) {
  let low = Infinity;
  for (const seq of store.events.keys()) if (seq < low) low = seq;
  return low;
}

async function loadOlder() {
  const id = openId;
  const store = id && storeFor(id);
  if (!store || !store.loaded || store.loading) return;
  const low = lowestSeq(store);
  if (!(low > 1) || low === Infinity) return;
  if (low <= store.firstSeq) {
    // Retention trimmed what lies below: say so rather than ask again and again.
    setHistoryState("idle", EARLIER_NOT_KEPT);
    return;
  }
  store.loading = true;
  setHistoryState("loading", "Loading older messages…");
  try {
    const page = await client.history(id, { before: low, limit: PAGE });
    page.messages.forEach(remember);
    store.firstSeq = page.first_seq ?? store.firstSeq;
    setHistoryState("idle", !page.has_more && store.firstSeq > 1 ? EARLIER_NOT_KEPT : "");
  } catch (error) {
    setHistoryState("error", `Could not load older messages: ${error.message}`);
  } finally {
    store.loading = false;
  }
  if (id === openId) {
    keepOffsetFromBottom = true;
    render();
  }
}

function setHistoryState(state, text) {
  const el = $("history-state");
  el.dataset.state = state;
  el.textContent = text;
}

$("messages").addEventListener("scroll", () => {
  const box = $("messages");
  stickToBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  if (box.scrollTop < 120) loadOlder();
});

// Marks the open channel read up to the newest event shown, a moment after it changes (a burst of
// events makes one read). Leaving the channel before that marks it at once.
let markReadTimer = null;
let markReadChannel = null;
function scheduleMarkRead() {
  if (markReadChannel && markReadChannel !== openId) flushMarkRead();
  clearTimeout(markReadTimer);
  markReadChannel = openId;
  markReadTimer = setTimeout(flushMarkRead, 250);
}

function flushMarkRead() {
  clearTimeout(markReadTimer);
  const id = markReadChannel;
  markReadChannel = null;
  if (id) markRead(id);
}

function markRead(id) {
  if (document.visibilityState !== "visible" || !client) return;
  const store = stores.get(id);
  const summary = channels.get(id);
  if (!store || !summary) return;
  let top = 0;
  for (const seq of store.events.keys()) if (seq > top) top = seq;
  if (top > summary.last_read_seq) client.markRead(id, top).catch(() => {});
}

document.addEventListener("visibilitychange", scheduleMarkRead);

function renderHeader() {
  if (!openId) return;
  $("channel-title").textContent = (channels.get(openId)?.type === "dm" ? "@ " : "# ") + displayName(openId);
  const info = details.get(openId);
  // members is left out above 1,000 (page them with listMembers): show none then.
  const members = info?.members ? info.members.slice(0, 50) : [];
  $("channel-members").replaceChildren(
    ...members.map((user) => {
      const li = document.createElement("li");
      li.dataset.user = user;
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.dataset.presence = user === me ? "online" : presence.get(user) || "unknown";
      const name = document.createElement("span");
      name.textContent = user;
      li.append(dot, name);
      return li;
    })
  );
}

// MARK: rendering messages

let renderQueued = false;
let stickToBottom = true;
let keepOffsetFromBottom = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

/** The open channel's rows: its events folded in seq order (edits and deletes applied), then the sends in flight. */
function rows(store) {
  const out = [];
  const byMessage = new Map();
  for (const seq of [...store.events.keys()].sort((a, b) => a - b)) {
    const event = store.events.get(seq);
    switch (event.type) {
      case "message": {
        const row = {
          key: "m:" + event.message_id,
          kind: "message",
          id: event.message_id,
          seq,
          sender: event.sender_id,
          text: event.text,
          at: event.created_at,
          edited: false,
          deleted: false,
        };
        byMessage.set(event.message_id, row);
        out.push(row);
        break;
      }
      case "edit": {
        const row = byMessage.get(event.message_id);
        if (row && !row.deleted) Object.assign(row, { text: event.text, edited: true });
        break;
      }
      case "delete": {
        const row = byMessage.get(event.message_id);
        if (row) Object.assign(row, { text: "", deleted: true });
        break;
      }
      case "member_joined":
      case "member_left": {
        const joined = event.type === "member_joined";
        let text = `${event.user_id} ${joined ? "joined" : "left"}`;
        if (event.sender_id && event.sender_id !== event.user_id) {
          text = `${event.sender_id} ${joined ? "added" : "removed"} ${event.user_id}`;
        } else if (joined && seq === 1) {
          text = `${event.user_id} started this conversation`;
        }
        out.push({ key: "s:" + seq, kind: "system", seq, text, at: event.created_at });
        break;
      }
      default:
        break;
    }
  }
  for (const [clientMsgId, pending] of store.pending) {
    out.push({ key: "p:" + clientMsgId, kind: "message", pending: pending.state, sender: me, text: pending.text, at: pending.at });
  }
  return out;
}

function render() {
  const list = $("message-list");
  const box = $("messages");
  if (!openId) return;
  const store = storeFor(openId);
  const offsetFromBottom = box.scrollHeight - box.scrollTop;
  const existing = new Map();
  for (const node of list.children) existing.set(node.dataset.key, node);
  const wanted = rows(store).map((row) => {
    const node = existing.get(row.key) || makeRow(row);
    existing.delete(row.key);
    updateRow(node, row);
    return node;
  });
  for (const node of existing.values()) node.remove();
  // Put the nodes in order, moving only those out of place.
  let cursor = list.firstChild;
  for (const node of wanted) {
    if (node === cursor) cursor = cursor.nextSibling;
    else list.insertBefore(node, cursor);
  }
  if (stickToBottom) box.scrollTop = box.scrollHeight;
  else if (keepOffsetFromBottom) box.scrollTop = box.scrollHeight - offsetFromBottom;
  keepOffsetFromBottom = false;
  // A short history leaves no room to scroll: load older pages until it fills the view.
  if (store.loaded && box.scrollHeight <= box.clientHeight + 10 && lowestSeq(store) > 1) loadOlder();
}

function makeRow(row) {
  const li = document.createElement("li");
  li.dataset.key = row.key;
  li.dataset.kind = row.kind;
  li.className = row.kind === "system" ? "msg system" : "msg";
  if (row.kind === "system") {
    const text = document.createElement("span");
    text.className = "text";
    li.append(text);
    return li;
  }
  const head = document.createElement("div");
  head.className = "head";
  const sender = document.createElement("span");
  sender.className = "sender";
  const time = document.createElement("time");
  const edited = document.createElement("span");
  edited.className = "edited";
  edited.textContent = "(edited)";
  head.append(sender, time, edited);
  const text = document.createElement("div");
  text.className = "text";
  li.append(head, text);
  if (row.sender === me && row.id) {
    const actions = document.createElement("span");
    actions.className = "actions";
    const edit = document.createElement("button");
    edit.type = "button";
    edit.dataset.action = "edit";
    edit.textContent = "Edit";
    const del = document.createElement("button");
    del.type = "button";
    del.dataset.action = "delete";
    del.textContent = "Delete";
    actions.append(edit, del);
    head.append(actions);
  }
  return li;
}

function updateRow(li, row) {
  if (row.kind === "system") {
    li.querySelector(".text").textContent = row.text;
    li.dataset.seq = String(row.seq);
    return;
  }
  li.dataset.sender = row.sender;
  if (row.id) li.dataset.messageId = row.id;
  if (row.seq) li.dataset.seq = String(row.seq);
  li.dataset.state = row.pending || "sent";
  li.dataset.deleted = String(!!row.deleted);
  li.dataset.edited = String(!!row.edited);
  li.classList.toggle("mine", row.sender === me);
  li.querySelector(".sender").textContent = row.sender;
  const time = li.querySelector("time");
  const when = new Date(row.at || Date.now());
  time.dateTime = when.toISOString();
  time.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  li.querySelector(".edited").hidden = !row.edited || row.deleted;
  const actions = li.querySelector(".actions");
  if (actions) actions.hidden = row.deleted;
  if (li.querySelector(".edit-input")) return; // being edited: leave the input alone
  const text = li.querySelector(".text");
  text.textContent = row.deleted ? "This message was deleted." : row.text;
}

// MARK: send, edit, delete

$("composer-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    sendComposer();
  }
});

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  sendComposer();
});

function sendComposer() {
  const input = $("composer-input");
  const text = input.value.trim();
  if (!text || !openId || !client) return;
  input.value = "";
  const id = openId;
  const store = storeFor(id);
  const sending = client.send(id, text);
  const pending = { text, state: "sending", at: Date.now() };
  store.pending.set(sending.clientMsgId, pending);
  stickToBottom = true;
  scheduleRender();
  sending.catch((error) => {
    pending.state = "failed";
    pending.text = `${text} (not sent: ${error.message})`;
    if (id === openId) scheduleRender();
  });
}

$("message-list").addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const li = button.closest("li.msg");
  const messageId = li?.dataset.messageId;
  if (!messageId || !openId) return;
  const channel = openId;
  if (button.dataset.action === "delete") {
    try {
      await client.deleteMessage(channel, messageId);
    } catch (error) {
      showSidebarError(`Could not delete: ${error.message}`);
    }
  } else if (button.dataset.action === "edit") {
    startEdit(li, channel, messageId);
  }
});

function startEdit(li, channel, messageId) {
  if (li.querySelector(".edit-input")) return;
  const text = li.querySelector(".text");
  const input = document.createElement("input");
  input.className = "edit-input";
  input.value = text.textContent;
  const original = text.textContent;
  text.replaceChildren(input);
  input.focus();
  input.select();
  const finish = () => {
    input.remove();
    render();
  };
  input.addEventListener("keydown", async (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      finish();
    } else if (e.key === "Enter") {
      e.preventDefault();
      const value = input.value.trim();
      if (!value || value === original) return finish();
      input.disabled = true;
      try {
        const event = await client.editMessage(channel, messageId, value);
        remember(event);
      } catch (error) {
        showSidebarError(`Could not edit: ${error.message}`);
      }
      finish();
    }
  });
  input.addEventListener("blur", () => {
    if (!input.disabled) finish();
  });
}

// MARK: boot

const auth = savedAuth();
if (auth) start(auth);
else showSignIn();
