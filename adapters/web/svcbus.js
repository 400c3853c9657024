// svcbus.js - a small browser client for svcbus-gateway's svcbus.v1 protocol.
//
//   import { SvcbusClient } from "./svcbus.js";
//   const bus = await SvcbusClient.connect("ws://127.0.0.1:8181/ws", token);
//   await bus.request("send", { queue: "demo", body: { hello: "world" } });
//   const sub = await bus.subscribe("demo", { prefetch: 10 }, (m) => bus.ack("demo", m.msg_id));
//   const { token: fence } = await bus.request("try_lock", { name: "job", ttl: 10 });
//
// Every request gets an id; request() resolves with the reply's "result" or
// rejects with a SvcbusError carrying the reply's "error" (code = SQLSTATE).
// Pushes ("message", "leader") go to the handlers given to subscribe() and
// watchLeader(). Plain ES module, no dependencies, no build step.

export class SvcbusError extends Error {
  constructor(err) {
    super(err.message);
    this.name = "SvcbusError";
    this.code = err.code;
    this.detail = err.detail;
    this.hint = err.hint;
  }
}

export class SvcbusClient {
  // Open the socket and authenticate with token (a JWT naming a role).
  static connect(url, token) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, "svcbus.v1");
      const bus = new SvcbusClient(ws);
      ws.onopen = () => {
        bus.request("auth", { token }).then((r) => {
          bus.role = r.role;
          resolve(bus);
        }, reject);
      };
      ws.onerror = () => reject(new Error("cannot connect to " + url));
    });
  }

  constructor(ws) {
    this.ws = ws;
    this.nextId = 0;
    this.waiting = new Map();       // id -> {resolve, reject}
    this.subs = new Map();          // sub id -> message handler
    this.watches = new Map();       // election -> leader handler
    this.onclose = null;            // (code, reason) => void
    ws.onmessage = (ev) => this._receive(ev.data);
    ws.onclose = (ev) => {
      for (const w of this.waiting.values())
        w.reject(new Error("connection closed (" + ev.code + " " + ev.reason + ")"));
      this.waiting.clear();
      if (this.onclose) this.onclose(ev.code, ev.reason);
    };
  }

  _receive(text) {
    const m = JSON.parse(text);
    if (m.push === "message") {
      const h = this.subs.get(m.sub);
      if (h) h(m);
      return;
    }
    if (m.push === "leader") {
      const h = this.watches.get(m.election);
      if (h) h(m);
      return;
    }
    const w = this.waiting.get(m.id);
    if (!w) return;
    this.waiting.delete(m.id);
    if (m.error) w.reject(new SvcbusError(m.error));
    else w.resolve(m.result);
  }

  request(op, fields = {}) {
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...fields, id, op }));
    });
  }

  // Deliveries are leased: ack (or nack) each, or it comes back after the
  // visibility timeout. prefetch is the credit: how many unsettled messages
  // the gateway may push before it waits for a settle or more credit.
  async subscribe(queue, { prefetch = 10, visibility_timeout } = {}, onMessage) {
    const fields = { queue, prefetch };
    if (visibility_timeout !== undefined) fields.visibility_timeout = visibility_timeout;
    const r = await this.request("subscribe", fields);
    this.subs.set(r.sub, onMessage);
    return r.sub;
  }

  async unsubscribe(sub) {
    const r = await this.request("unsubscribe", { sub });
    this.subs.delete(sub);
    return r;
  }

  ack(queue, msgIds) {
    return this.request("ack", { queue, msg_ids: msgIds });
  }

  nack(queue, msgId, delay = 0) {
    return this.request("nack", { queue, msg_id: msgId, delay });
  }

  async watchLeader(election, onLeader) {
    this.watches.set(election, onLeader);
    return this.request("watch_leader", { election });
  }

  close() {
    this.ws.close(1000, "bye");
  }
}
