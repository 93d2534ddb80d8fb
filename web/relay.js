/**
 * relay.js: a small client for the relay (WebSocket + REST). An ES module, no dependencies.
 *
 *   import { RelayClient, devToken } from "/relay.js";
 *
 *   const { token } = await devToken("alice");            // dev mode only; else get a JWT elsewhere
 *   const relay = new RelayClient({ token });             // baseUrl defaults to the page's origin
 *   relay.on("state", ({ state }) => console.log(state)); // connecting, open, reconnecting, closed, unauthorized
 *   relay.on("event", (event) => render(event));          // every channel event, once each, in seq order
 *   relay.connect();
 *   const ack = await relay.send("c1", "hi");             // { channel_id, seq, message_id, client_msg_id }
 *
 * Constructor options:
 *   token           the JWT (sent as ?token= on the socket and as a Bearer header over REST)
 *   baseUrl         the relay's http(s) URL (default: location.origin)
 *   storage         where cursors are kept (default: localStorage; null keeps them in memory)
 *   backoff         { initialMs: 500, maxMs: 15000 }: reconnect delays grow x2 up to maxMs, with jitter
 *   ackTimeoutMs    a send not acknowledged within this is sent again, same client_msg_id (default 10000)
 *   gapWaitMs       how long an out-of-order event waits for the events before it before they are
 *                   fetched over REST (default 1500)
 *
 * Connection:
 *   connect()                 opens the socket (and reopens it after any loss, with backoff + jitter)
 *   close()                   closes it for good (state "closed")
 *   state                     "idle" | "connecting" | "open" | "reconnecting" | "closed" | "unauthorized"
 *   user, session             from the server's hello (null before the first one)
 *   on(name, fn) -> off()     listen; names:
 *     "state"   { state, code?, reason? }  every state change; "unauthorized" (close 4001 or a 401) is
 *                                          final: get a new token and make a new client
 *     "hello"   the hello frame            after each (re)connect, before the resume
 *     "resumed" { truncated }              a replay after a (re)connect is complete (once per 500
 *                                          channels: a resume frame holds at most that many); truncated is
 *                                          { channel_id: first_seq } for each channel whose events
 *                                          below first_seq are no longer kept (retention trimmed
 *                                          them before this client saw them), else {}
 *     "event"   an event (contract, sec 3) once per (channel_id, seq), in seq order per channel
 *     "read"    { channel_id, last_read_seq } the read cursor moved (this session's, from any of its sockets)
 *     "error"   an error frame not tied to a send, or a failed REST call made by the client itself
 *   cursors()                 { channel_id: last seq delivered }
 *   seen(channelId, seq)      the app holds the channel's events up to seq (e.g. a history page it
 *                             loaded): the cursor moves up to seq, never back
 *
 * After every (re)connect the client sends {"type":"resume","cursors":…} with the last seq it
 * delivered per channel (several frames of up to 500 channels each for more); the cursors live in storage under "relay.cursors.<user>/<session>", so a
 * reloaded page resumes where it stopped (after each hello it also checks them against
 * GET /channels: a cursor above a channel's last seq is lowered, one of a channel left dropped). A silent socket (no frame for two heartbeat intervals,
 * heartbeat_ms from the hello; the client pings every half interval) is dropped and reopened. Close
 * 4008 (slow consumer) reconnects at once and resumes; 4001 stops. The backoff starts again only
 * once a connection got its first "resumed".
 *
 * Sending:
 *   send(channelId, text) -> Promise<ack>   queued while offline; resent with the same client_msg_id
 *       until an ack or a definitive error (rejects with a RelayError); "unavailable" and
 *       "rate_limited" errors are retried. The promise also carries .clientMsgId (use it to match
 *       the message event, which has the same client_msg_id).
 *   markRead(channelId, seq) -> Promise<last_read_seq>   over the socket when open, else REST
 *
 * REST (each returns a Promise; failures reject with a RelayError { status, code, message }):
 *   listChannels()                          [{ id, type, name, member_count, last_seq, last_read_seq, unread }]
 *   getChannel(id)                          { id, type, name, members?, member_count, first_seq, last_seq, created_at, … }
 *                                           (members only up to 1,000: listMembers pages them)
 *   listMembers(id, { cursor?, limit? })    { members, next_cursor }   (next_cursor null at the end)
 *   createDM(userId)                        the DM with that user (the same one every time)
 *   createGroup({ name, members, id? })     a new group
 *   addMembers(channelId, userIds), removeMember(channelId, userId)
 *   history(channelId, { before?, after?, limit? }) -> { messages, has_more, first_seq }   (ascending seq;
 *       first_seq is the lowest seq the relay still keeps: below it, "earlier messages are no longer kept")
 *   editMessage(channelId, messageId, text), deleteMessage(channelId, messageId) -> the edit/delete event
 *   presence(userIds) -> { user: "online" | "offline" }
 *
 *   devToken(userId, { sessionId?, baseUrl? }) -> { token, user_id, session_id }   (relay --dev only)
 */

const TRANSIENT = new Set(["unavailable", "rate_limited"]);
/** Channels per resume frame: 500 cursors with 64-character ids make about 40 KB. */
const RESUME_BATCH = 500;

/** An error from the relay: an HTTP status (0 for a network failure or a socket answer) and the error code. */
export class RelayError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.name = "RelayError";
    this.status = status;
    this.code = code;
  }
}

/** Asks a relay in dev mode for a token (POST /auth/dev-token). */
export async function devToken(userId, { sessionId, baseUrl } = {}) {
  const body = { user_id: userId };
  if (sessionId) body.session_id = sessionId;
  return fetchJSON(baseUrl ?? defaultBase(), "POST", "/auth/dev-token", body, null);
}

function defaultBase() {
  return globalThis.location ? globalThis.location.origin : "http://127.0.0.1:8080";
}

async function fetchJSON(base, method, path, body, token) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new RelayError(0, "network", String(error && error.message ? error.message : error));
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new RelayError(response.status, error.code || "http_" + response.status, error.message || response.statusText);
  }
  return data;
}

function uuid() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  // crypto.randomUUID needs a secure context; plain http on a LAN address is not one.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export class RelayClient {
  constructor({ token, baseUrl, storage, backoff, ackTimeoutMs = 10000, gapWaitMs = 1500 } = {}) {
    if (!token) throw new TypeError("RelayClient: a token is required");
    this.token = token;
    this.baseUrl = (baseUrl ?? defaultBase()).replace(/\/+$/, "");
    this.storage = storage === undefined ? globalThis.localStorage ?? null : storage;
    this.backoff = { initialMs: 500, maxMs: 15000, ...(backoff || {}) };
    this.ackTimeoutMs = ackTimeoutMs;
    this.gapWaitMs = gapWaitMs;

    this.state = "idle";
    this.user = null;
    this.session = null;
    this._listeners = new Map();
    this._socket = null;
    this._attempt = 0;
    this._reconnectTimer = null;
    this._watchdog = null;
    this._heartbeatMs = 30000;
    this._lastFrameAt = 0;
    this._lastPingAt = 0;
    this._cursors = {}; // channel -> last seq delivered
    this._pendingEvents = new Map(); // channel -> Map(seq -> event), events ahead of a gap
    this._gapTimers = new Map(); // channel -> timer
    this._sends = new Map(); // client_msg_id -> { frame, resolve, reject, sentAt }
    this._reads = new Map(); // channel -> [{ seq, resolve, reject }]
    this._saveTimer = null;
    this._onPageHide = () => this._saveCursors();
    if (globalThis.addEventListener) globalThis.addEventListener("pagehide", this._onPageHide);
  }

  // MARK: listeners

  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return () => this._listeners.get(name)?.delete(fn);
  }

  _emit(name, value) {
    for (const fn of [...(this._listeners.get(name) || [])]) {
      try {
        fn(value);
      } catch (error) {
        console.error(`relay.js: a "${name}" listener threw`, error);
      }
    }
  }

  _setState(state, detail = {}) {
    if (this.state === state && !detail.code) return;
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  // MARK: connection

  connect() {
    if (this.state === "unauthorized") return;
    if (this._socket) return;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._open();
  }

  close() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopWatchdog();
    this._saveCursors();
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close(1000, "bye");
      } catch {}
    }
    if (globalThis.removeEventListener) globalThis.removeEventListener("pagehide", this._onPageHide);
    this._failReads();
    for (const send of this._sends.values()) send.reject(new RelayError(0, "closed", "the client was closed before an ack"));
    this._sends.clear();
    if (this.state !== "unauthorized") this._setState("closed");
  }

  _open() {
    const url = new URL("/ws", this.baseUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.token);
    this._setState("connecting");
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      this._scheduleReconnect({ code: 0, reason: String(error) });
      return;
    }
    this._socket = socket;
    this._helloSeen = false;
    this._lastFrameAt = Date.now();
    socket.onmessage = (message) => {
      if (socket !== this._socket) return;
      this._lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      this._handle(frame);
    };
    socket.onclose = (close) => {
      if (socket !== this._socket) return;
      this._dropSocket();
      if (close.code === 4001) {
        this._unauthorized(close.code, close.reason);
      } else {
        this._scheduleReconnect({ code: close.code, reason: close.reason }, close.code === 4008);
      }
    };
    socket.onerror = () => {
      // A close follows in browsers. Node's WebSocket may report a failed handshake with no close:
      // once the events of this turn have run, a socket still in place and not open is given up.
      setTimeout(() => {
        if (socket !== this._socket || socket.readyState === WebSocket.OPEN) return;
        this._dropSocket();
        this._scheduleReconnect({ code: 0, reason: "the connection failed" });
      }, 0);
    };
    this._startWatchdog();
  }

  _dropSocket() {
    const socket = this._socket;
    this._socket = null;
    this._stopWatchdog();
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close();
      } catch {}
    }
    // Reads in flight on the lost socket go over REST instead.
    const reads = this._reads;
    this._reads = new Map();
    for (const [channel, waiters] of reads) {
      const seq = Math.max(...waiters.map((w) => w.seq));
      this._restRead(channel, seq).then(
        (last) => waiters.forEach((w) => w.resolve(last)),
        (error) => waiters.forEach((w) => w.reject(error))
      );
    }
  }

  _unauthorized(code, reason) {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    if (this._socket) this._dropSocket();
    this._saveCursors();
    for (const send of this._sends.values()) send.reject(new RelayError(401, "unauthorized", reason || "token invalid or expired"));
    this._sends.clear();
    this._setState("unauthorized", { code, reason });
  }

  _scheduleReconnect(detail, immediately = false) {
    if (this.state === "closed" || this.state === "unauthorized") return;
    const base = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** this._attempt);
    this._attempt = Math.min(this._attempt + 1, 16);
    // Jitter: somewhere in [base/2, base), so that many clients do not come back in step.
    const delay = immediately ? Math.random() * 250 : base / 2 + Math.random() * (base / 2);
    this._setState("reconnecting", { ...detail, retryInMs: Math.round(delay) });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this.state === "reconnecting") this._open();
    }, delay);
  }

  _startWatchdog() {
    this._stopWatchdog();
    this._watchdog = setInterval(() => this._tick(), 1000);
  }

  _stopWatchdog() {
    clearInterval(this._watchdog);
    this._watchdog = null;
  }

  _tick() {
    const socket = this._socket;
    if (!socket) return;
    const now = Date.now();
    // Before the hello, a socket gets 15 s to say it; after it, two heartbeat intervals.
    const limit = this._helloSeen ? 2 * this._heartbeatMs : Math.min(15000, 2 * this._heartbeatMs);
    if (now - this._lastFrameAt > limit) {
      // Silent for two heartbeats: dead, whatever the socket says.
      this._dropSocket();
      this._scheduleReconnect({ code: 0, reason: "no frame for two heartbeat intervals" });
      return;
    }
    if (!this._helloSeen || socket.readyState !== WebSocket.OPEN) return;
    if (now - this._lastPingAt >= this._heartbeatMs / 2) {
      this._lastPingAt = now;
      this._write({ type: "ping" });
    }
    for (const send of this._sends.values()) {
      if (now - send.sentAt >= this.ackTimeoutMs) this._transmit(send);
    }
  }

  _write(frame) {
    const socket = this._socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    try {
      socket.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // MARK: frames

  _handle(frame) {
    switch (frame.type) {
      case "hello":
        return this._hello(frame);
      case "resumed":
        return this._resumed(frame);
      case "pong":
        return;
      case "ack":
        return this._ack(frame);
      case "read_ok":
        return this._readOK(frame);
      case "error":
        return this._error(frame);
      default:
        if (typeof frame.channel_id === "string" && Number.isInteger(frame.seq)) this._event(frame);
    }
  }

  _hello(frame) {
    const key = `${frame.user_id}/${frame.session_id}`;
    if (this._cursorKey !== key) {
      this._cursorKey = key;
      this._cursors = this._loadCursors();
      this._pendingEvents.clear();
    }
    this.user = frame.user_id;
    this.session = frame.session_id;
    this._heartbeatMs = frame.heartbeat_ms > 0 ? frame.heartbeat_ms : 30000;
    this._helloSeen = true;
    this._lastPingAt = Date.now();
    this._emit("hello", frame);
    this._resume(this._cursors);
    if (Object.keys(this._cursors).length) this._checkCursors(this._socket);
    for (const send of this._sends.values()) this._transmit(send);
    for (const [channel, waiters] of this._reads) {
      this._write({ type: "read", channel_id: channel, seq: Math.max(...waiters.map((w) => w.seq)) });
    }
    this._setState("open");
  }

  _ack(frame) {
    const send = this._sends.get(frame.client_msg_id);
    if (!send) return;
    this._sends.delete(frame.client_msg_id);
    send.resolve({ channel_id: frame.channel_id, seq: frame.seq, message_id: frame.message_id, client_msg_id: frame.client_msg_id });
  }

  _readOK(frame) {
    this._emit("read", { channel_id: frame.channel_id, last_read_seq: frame.last_read_seq });
    const waiters = this._reads.get(frame.channel_id);
    if (!waiters) return;
    const done = waiters.filter((w) => w.seq <= frame.last_read_seq);
    const rest = waiters.filter((w) => w.seq > frame.last_read_seq);
    if (rest.length) this._reads.set(frame.channel_id, rest);
    else this._reads.delete(frame.channel_id);
    done.forEach((w) => w.resolve(frame.last_read_seq));
  }

  _error(frame) {
    if (frame.client_msg_id && this._sends.has(frame.client_msg_id)) {
      const send = this._sends.get(frame.client_msg_id);
      if (TRANSIENT.has(frame.code)) {
        send.sentAt = Date.now() - this.ackTimeoutMs + 2000; // try again in about 2 s
        return;
      }
      this._sends.delete(frame.client_msg_id);
      send.reject(new RelayError(0, frame.code, frame.message));
      return;
    }
    if (frame.channel_id && frame.code === "forbidden") {
      // A resumed channel this user is no longer in: forget its cursor.
      delete this._cursors[frame.channel_id];
      this._scheduleSave();
    }
    if (frame.channel_id && frame.code === "unavailable" && !this._reads.has(frame.channel_id)) {
      // A resumed channel Redis could not be asked about (its shard down): resume it again later.
      const channel = frame.channel_id;
      const socket = this._socket;
      setTimeout(() => {
        if (socket !== this._socket || this._cursors[channel] === undefined) return;
        this._write({ type: "resume", cursors: { [channel]: this._cursors[channel] } });
      }, 2000);
    }
    if (frame.channel_id && this._reads.has(frame.channel_id)) {
      const waiters = this._reads.get(frame.channel_id);
      this._reads.delete(frame.channel_id);
      waiters.forEach((w) => w.reject(new RelayError(0, frame.code, frame.message)));
      return;
    }
    this._emit("error", frame);
  }

  /**
   * Sends `cursors` as resume frames of at most RESUME_BATCH channels each: a frame is limited to
   * 64 KiB, which one resume of about 800 channels with long ids would pass (and be closed with
   * 1009, again on every reconnect). Each frame is answered with its own "resumed".
   */
  _resume(cursors) {
    const entries = Object.entries(cursors);
    if (entries.length === 0) this._write({ type: "resume", cursors: {} });
    for (let start = 0; start < entries.length; start += RESUME_BATCH) {
      this._write({ type: "resume", cursors: Object.fromEntries(entries.slice(start, start + RESUME_BATCH)) });
    }
  }

  /** After a resume: a channel whose early events were trimmed goes on from its first kept seq. */
  _resumed(frame) {
    // A connection that got this far is sound: the next loss starts the backoff again from its start
    // (not at the hello, so that a failure after it cannot make a client reconnect at once forever).
    this._attempt = 0;
    const truncated = frame.truncated && typeof frame.truncated === "object" ? frame.truncated : {};
    for (const [channel, firstSeq] of Object.entries(truncated)) this._skipTo(channel, firstSeq);
    this._emit("resumed", { truncated });
  }

  /** Moves a channel's cursor up to just below firstSeq (events below it are no longer kept), and delivers what waited. */
  _skipTo(channel, firstSeq) {
    if (!Number.isInteger(firstSeq)) return;
    const cursor = this._cursors[channel];
    if (cursor !== undefined && cursor < firstSeq - 1) {
      this._cursors[channel] = firstSeq - 1;
      this._scheduleSave();
      this._drain(channel);
    }
  }

  // MARK: events, in order, once

  _event(event) {
    const channel = event.channel_id;
    const cursor = this._cursors[channel];
    if (cursor !== undefined && event.seq <= cursor) return;
    if (cursor === undefined || event.seq === cursor + 1) {
      this._deliver(event);
      this._drain(channel);
      return;
    }
    // Ahead of a gap: hold it until the events before it arrive (a resume's replay), or fetch them.
    let pending = this._pendingEvents.get(channel);
    if (!pending) this._pendingEvents.set(channel, (pending = new Map()));
    pending.set(event.seq, event);
    if (!this._gapTimers.has(channel)) {
      this._gapTimers.set(
        channel,
        setTimeout(() => {
          this._gapTimers.delete(channel);
          this._fillGap(channel);
        }, this.gapWaitMs)
      );
    }
  }

  _deliver(event) {
    this._cursors[event.channel_id] = event.seq;
    this._scheduleSave();
    this._emit("event", event);
  }

  _drain(channel) {
    const pending = this._pendingEvents.get(channel);
    if (!pending) return;
    for (;;) {
      const cursor = this._cursors[channel];
      for (const seq of pending.keys()) if (seq <= cursor) pending.delete(seq);
      const next = pending.get(cursor + 1);
      if (!next) break;
      pending.delete(cursor + 1);
      this._deliver(next);
    }
    if (pending.size === 0) {
      this._pendingEvents.delete(channel);
      clearTimeout(this._gapTimers.get(channel));
      this._gapTimers.delete(channel);
    }
  }

  async _fillGap(channel) {
    try {
      while (this._pendingEvents.has(channel)) {
        const after = this._cursors[channel] ?? 0;
        const page = await this.history(channel, { after, limit: 200 });
        // A hole that retention trimmed cannot be filled: go on from the first kept seq.
        if (Number.isInteger(page.first_seq) && page.first_seq > after + 1) this._skipTo(channel, page.first_seq);
        for (const event of page.messages) this._event(event);
        if (!page.has_more || page.messages.length === 0) break;
      }
    } catch (error) {
      this._emit("error", { type: "error", code: error.code || "network", message: String(error.message), channel_id: channel });
    }
    if (this._pendingEvents.has(channel) && !this._gapTimers.has(channel)) {
      // Still a hole (the fetch failed): try again later.
      this._gapTimers.set(
        channel,
        setTimeout(() => {
          this._gapTimers.delete(channel);
          this._fillGap(channel);
        }, this.gapWaitMs * 2)
      );
    }
  }

  /**
   * A stored cursor above a channel's last seq (the channel was made anew under the same id, say a
   * DM after its Redis was emptied) would hide every event up to it: such a cursor is lowered to
   * the channel's last seq and resumed again. Cursors of channels the user left are dropped.
   */
  async _checkCursors(socket) {
    let list;
    try {
      list = await this.listChannels();
    } catch {
      return;
    }
    if (socket !== this._socket) return;
    const lastSeq = new Map(list.map((c) => [c.id, c.last_seq]));
    const lowered = {};
    for (const [channel, cursor] of Object.entries(this._cursors)) {
      if (!lastSeq.has(channel)) {
        delete this._cursors[channel];
      } else if (cursor > lastSeq.get(channel)) {
        this._cursors[channel] = lowered[channel] = lastSeq.get(channel);
        this._pendingEvents.delete(channel);
      }
    }
    this._scheduleSave();
    if (Object.keys(lowered).length) this._resume(lowered);
  }

  cursors() {
    return { ...this._cursors };
  }

  /**
   * Tells the client that the app holds every event of a channel up to `seq` (say, from a history
   * page): the cursor moves up to it, so a later resume starts there and live events below it are
   * dropped as duplicates. It never moves a cursor back.
   */
  seen(channelId, seq) {
    if (!Number.isInteger(seq) || seq < 0) return;
    if ((this._cursors[channelId] ?? -1) >= seq) return;
    this._cursors[channelId] = seq;
    this._scheduleSave();
    this._drain(channelId);
  }

  _loadCursors() {
    if (!this.storage || !this._cursorKey) return {};
    try {
      const saved = JSON.parse(this.storage.getItem("relay.cursors." + this._cursorKey) || "{}");
      const cursors = {};
      for (const [channel, seq] of Object.entries(saved)) if (Number.isInteger(seq) && seq >= 0) cursors[channel] = seq;
      return cursors;
    } catch {
      return {};
    }
  }

  _scheduleSave() {
    if (this._saveTimer) return;
    this._saveTimer = setTimeout(() => this._saveCursors(), 200);
  }

  _saveCursors() {
    clearTimeout(this._saveTimer);
    this._saveTimer = null;
    if (!this.storage || !this._cursorKey) return;
    try {
      this.storage.setItem("relay.cursors." + this._cursorKey, JSON.stringify(this._cursors));
    } catch {}
  }

  // MARK: sending

  send(channelId, text) {
    const clientMsgId = uuid();
    let entry;
    const promise = new Promise((resolve, reject) => {
      entry = {
        frame: { type: "send", channel_id: channelId, client_msg_id: clientMsgId, text },
        resolve,
        reject,
        sentAt: 0,
      };
    });
    promise.clientMsgId = clientMsgId;
    if (this.state === "unauthorized" || this.state === "closed") {
      entry.reject(new RelayError(0, this.state, "the client is " + this.state));
      return promise;
    }
    this._sends.set(clientMsgId, entry);
    if (this._helloSeen) this._transmit(entry);
    return promise;
  }

  _transmit(send) {
    if (this._write(send.frame)) send.sentAt = Date.now();
  }

  markRead(channelId, seq) {
    if (this._helloSeen && this._socket && this._socket.readyState === WebSocket.OPEN) {
      return new Promise((resolve, reject) => {
        const waiters = this._reads.get(channelId) || [];
        waiters.push({ seq, resolve, reject });
        this._reads.set(channelId, waiters);
        this._write({ type: "read", channel_id: channelId, seq });
      });
    }
    return this._restRead(channelId, seq);
  }

  async _restRead(channelId, seq) {
    const result = await this._rest("POST", `/channels/${encodeURIComponent(channelId)}/read`, { seq });
    this._emit("read", { channel_id: channelId, last_read_seq: result.last_read_seq });
    return result.last_read_seq;
  }

  _failReads() {
    for (const waiters of this._reads.values()) waiters.forEach((w) => w.reject(new RelayError(0, "closed", "client closed")));
    this._reads.clear();
  }

  // MARK: REST

  async _rest(method, path, body) {
    try {
      return await fetchJSON(this.baseUrl, method, path, body, this.token);
    } catch (error) {
      if (error.status === 401) this._unauthorized(4001, error.message);
      throw error;
    }
  }

  async listChannels() {
    return (await this._rest("GET", "/channels")).channels;
  }

  getChannel(id) {
    return this._rest("GET", `/channels/${encodeURIComponent(id)}`);
  }

  createDM(userId) {
    return this._rest("POST", "/channels", { type: "dm", members: [userId] });
  }

  createGroup({ name, members = [], id } = {}) {
    const body = { type: "group", members };
    if (name) body.name = name;
    if (id) body.id = id;
    return this._rest("POST", "/channels", body);
  }

  addMembers(channelId, userIds) {
    return this._rest("POST", `/channels/${encodeURIComponent(channelId)}/members`, { user_ids: userIds });
  }

  removeMember(channelId, userId) {
    return this._rest("DELETE", `/channels/${encodeURIComponent(channelId)}/members/${encodeURIComponent(userId)}`);
  }

  listMembers(channelId, { cursor, limit } = {}) {
    const query = new URLSearchParams();
    if (cursor) query.set("cursor", cursor);
    if (limit) query.set("limit", String(limit));
    const suffix = query.toString() ? "?" + query : "";
    return this._rest("GET", `/channels/${encodeURIComponent(channelId)}/members${suffix}`);
  }

  history(channelId, { before, after, limit } = {}) {
    const query = new URLSearchParams();
    if (before !== undefined && before !== null) query.set("before", String(before));
    if (after !== undefined && after !== null) query.set("after", String(after));
    if (limit) query.set("limit", String(limit));
    const suffix = query.toString() ? "?" + query : "";
    return this._rest("GET", `/channels/${encodeURIComponent(channelId)}/messages${suffix}`);
  }

  async editMessage(channelId, messageId, text) {
    const path = `/channels/${encodeURIComponent(channelId)}/messages/${encodeURIComponent(messageId)}`;
    return (await this._rest("PATCH", path, { text })).message;
  }

  async deleteMessage(channelId, messageId) {
    const path = `/channels/${encodeURIComponent(channelId)}/messages/${encodeURIComponent(messageId)}`;
    return (await this._rest("DELETE", path)).message;
  }

  async presence(userIds) {
    if (!userIds.length) return {};
    const query = new URLSearchParams({ user_ids: userIds.join(",") });
    return (await this._rest("GET", `/presence?${query}`)).presence;
  }
}
