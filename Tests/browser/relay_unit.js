// relay.js against a scripted server: a fake WebSocket and a fake fetch, in the real browser.
// Run by chat_test.py with execute_async_script on the app's page before anyone signs in; the
// last argument is the callback, which gets { passed: [names], failed: [messages] }.
const done = arguments[arguments.length - 1];

(async () => {
  const passed = [];
  const failed = [];
  const realWebSocket = window.WebSocket;
  const realFetch = window.fetch;

  class FakeSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    static all = [];
    constructor(url) {
      this.url = String(url);
      this.readyState = 0;
      this.sent = [];
      FakeSocket.all.push(this);
      setTimeout(() => {
        this.readyState = 1;
        if (this.onopen) this.onopen({});
      }, 0);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code = 1000, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose && this.onclose({ code, reason }), 0);
    }
    push(frame) {
      if (this.onmessage) this.onmessage({ data: JSON.stringify(frame) });
    }
    drop(code, reason = "") {
      this.readyState = 3;
      if (this.onclose) this.onclose({ code, reason });
    }
  }

  const fetched = [];
  let history = [];
  let channels = [
    { id: "c", last_seq: 100 },
    { id: "old", last_seq: 100 },
  ];
  const fakeFetch = async (url, init) => {
    fetched.push({ url: String(url), method: init.method, auth: init.headers.Authorization });
    const u = new URL(url);
    if (u.pathname === "/channels") return new Response(JSON.stringify({ channels }), { status: 200 });
    const after = Number(u.searchParams.get("after") || 0);
    const messages = history.filter((e) => e.seq > after);
    return new Response(JSON.stringify({ messages, has_more: false }), { status: 200 });
  };

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  async function until(what, condition, ms = 4000) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (condition()) return;
      await sleep(20);
    }
    throw new Error("timed out: " + what);
  }
  async function check(name, body) {
    try {
      await body();
      passed.push(name);
    } catch (error) {
      failed.push(`${name}: ${error && error.message ? error.message : error}`);
    }
  }
  function equal(actual, expected, what) {
    const a = JSON.stringify(actual);
    const e = JSON.stringify(expected);
    if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
  }
  const event = (seq, channel = "c") => ({ channel_id: channel, seq, type: "message", message_id: "m" + seq, sender_id: "x", text: "t" + seq, created_at: 1 });

  window.WebSocket = FakeSocket;
  window.fetch = fakeFetch;
  try {
    const { RelayClient, RelayError } = await import("/relay.js");
    const store = new Map();
    const storage = { getItem: (k) => (store.has(k) ? store.get(k) : null), setItem: (k, v) => store.set(k, String(v)) };
    store.set("relay.cursors.u/s", JSON.stringify({ old: 7 }));
    const client = new RelayClient({
      token: "tok",
      baseUrl: location.origin,
      storage,
      gapWaitMs: 150,
      ackTimeoutMs: 60000,
      backoff: { initialMs: 40, maxMs: 80 },
    });
    const states = [];
    const delivered = [];
    client.on("state", (s) => states.push(s.state));
    client.on("event", (e) => delivered.push(`${e.channel_id}:${e.seq}`));
    client.connect();
    const s0 = FakeSocket.all[0];

    await check("connects to /ws with the token", async () => {
      const url = new URL(s0.url);
      equal([url.protocol, url.pathname, url.searchParams.get("token")], [location.protocol === "https:" ? "wss:" : "ws:", "/ws", "tok"], "url");
      equal(states, ["connecting"], "states");
    });

    await check("resumes from the stored cursors after the hello", async () => {
      await sleep(5);
      s0.push({ type: "hello", user_id: "u", session_id: "s", connection_id: "w1", heartbeat_ms: 60000 });
      equal(s0.sent[0], { type: "resume", cursors: { old: 7 } }, "first frame");
      equal(client.state, "open", "state");
      equal([client.user, client.session], ["u", "s"], "identity");
    });

    await check("delivers each seq once, in order", async () => {
      for (const seq of [1, 3, 2, 2, 4, 1, 3]) s0.push(event(seq));
      s0.push(event(8, "old"));
      s0.push(event(7, "old"));
      equal(delivered, ["c:1", "c:2", "c:3", "c:4", "old:8"], "delivered");
      await until("cursors saved", () => store.get("relay.cursors.u/s") === JSON.stringify({ old: 8, c: 4 }));
    });

    await check("fills a gap that does not close by itself from REST history", async () => {
      history = [5, 6, 7, 8].map((s) => event(s));
      delivered.length = 0;
      s0.push(event(8));
      equal(delivered, [], "held back");
      await until("the gap filled", () => delivered.length === 4);
      equal(delivered, ["c:5", "c:6", "c:7", "c:8"], "delivered");
      const call = fetched.filter((f) => f.url.includes("/messages")).at(-1);
      equal([new URL(call.url).pathname + new URL(call.url).search, call.auth], ["/channels/c/messages?after=4&limit=200", "Bearer tok"], "request");
    });

    let ackOfFirst;
    await check("a send survives a 4008 close: resent with the same client_msg_id after the resume", async () => {
      const sending = client.send("c", "hello");
      const frame = s0.sent.at(-1);
      equal([frame.type, frame.channel_id, frame.text, frame.client_msg_id], ["send", "c", "hello", sending.clientMsgId], "send frame");
      if (!/^[0-9a-f-]{36}$/.test(frame.client_msg_id)) throw new Error("client_msg_id is not a UUID: " + frame.client_msg_id);
      s0.drop(4008, "slow consumer");
      equal(client.state, "reconnecting", "state after 4008");
      await until("a new socket", () => FakeSocket.all.length === 2, 1000);
      const s1 = FakeSocket.all[1];
      await sleep(5);
      s1.push({ type: "hello", user_id: "u", session_id: "s", connection_id: "w2", heartbeat_ms: 60000 });
      equal(s1.sent[0], { type: "resume", cursors: { old: 8, c: 8 } }, "resume");
      equal(s1.sent[1], frame, "the resent frame");
      s1.push({ type: "ack", client_msg_id: frame.client_msg_id, channel_id: "c", seq: 9, message_id: "m9" });
      ackOfFirst = await sending;
      equal(ackOfFirst, { channel_id: "c", seq: 9, message_id: "m9", client_msg_id: frame.client_msg_id }, "ack");
    });

    await check("a definitive error rejects the send", async () => {
      const s1 = FakeSocket.all[1];
      const sending = client.send("c", "nope");
      const id = s1.sent.at(-1).client_msg_id;
      s1.push({ type: "error", client_msg_id: id, code: "forbidden", message: "not a member" });
      const error = await sending.then(() => null, (e) => e);
      if (!(error instanceof RelayError) || error.code !== "forbidden") throw new Error("not rejected with forbidden: " + error);
    });

    await check("pings, and drops a socket silent for two heartbeats", async () => {
      const s1 = FakeSocket.all[1];
      s1.push({ type: "hello", user_id: "u", session_id: "s", connection_id: "w3", heartbeat_ms: 500 });
      await until("a ping", () => s1.sent.some((f) => f.type === "ping"), 2500);
      await until("a reconnect", () => FakeSocket.all.length === 3, 4000);
      if (!states.includes("reconnecting")) throw new Error("no reconnecting state: " + states);
    });

    await check("a cursor above the channel's last seq is lowered and resumed again", async () => {
      const s2 = FakeSocket.all[2];
      await sleep(5);
      channels = [{ id: "c", last_seq: 3 }];
      s2.push({ type: "hello", user_id: "u", session_id: "s", connection_id: "w4", heartbeat_ms: 60000 });
      equal(s2.sent[0], { type: "resume", cursors: { old: 8, c: 8 } }, "the first resume");
      await until("a second resume", () => s2.sent.length > 1);
      equal(s2.sent[1], { type: "resume", cursors: { c: 3 } }, "the second resume");
      equal(client.cursors(), { c: 3 }, "cursors");
      delivered.length = 0;
      s2.push(event(4));
      equal(delivered, ["c:4"], "delivered");
    });

    await check("close 4001 stops reconnecting and rejects pending sends", async () => {
      const s2 = FakeSocket.all[2];
      await sleep(5);
      s2.push({ type: "hello", user_id: "u", session_id: "s", connection_id: "w4", heartbeat_ms: 60000 });
      const sending = client.send("c", "late");
      s2.drop(4001, "token expired");
      const error = await sending.then(() => null, (e) => e);
      equal(error && error.code, "unauthorized", "the send's error");
      equal(client.state, "unauthorized", "state");
      await sleep(300);
      equal(FakeSocket.all.length, 3, "sockets opened");
      equal(states.at(-1), "unauthorized", "last state");
    });
    client.close();
  } catch (error) {
    failed.push("setup: " + (error && error.stack ? error.stack : error));
  } finally {
    window.WebSocket = realWebSocket;
    window.fetch = realFetch;
  }
  done({ passed, failed });
})();
