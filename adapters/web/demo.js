// demo.js - the demo page's logic on top of svcbus.js.
//
// The form may be filled from the URL's fragment, which browsers never send
// to the server: #token=<jwt>&queue=demo (make run prints such a URL).
import { SvcbusClient } from "./svcbus.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1));
let bus = null;
let sub = null;
let held = null;            // {name, token, expires}
let lockTimer = null;
const arrived = [];          // messages seen (window.svcbusDemo.arrived)

$("url").value = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
if (params.get("token")) $("token").value = params.get("token");
if (params.get("queue")) $("queue").value = params.get("queue");

function status(text) {
  $("status").textContent = text;
}

function showError(where, e) {
  $(where).textContent = e.code ? e.code + ": " + e.message : String(e.message || e);
  $(where).className = "err";
}

function enable(on) {
  for (const id of ["send", "subscribe", "lock"]) $(id).disabled = !on;
  $("unlock").disabled = !on || !held;
}

async function connect() {
  $("conn-error").textContent = "";
  try {
    bus = await SvcbusClient.connect($("url").value, $("token").value.trim());
  } catch (e) {
    showError("conn-error", e);
    throw e;
  }
  bus.onclose = (code, reason) => {
    status("closed (" + code + (reason ? " " + reason : "") + ")");
    enable(false);
    sub = null;
  };
  status("connected as " + bus.role);
  enable(true);
}

async function send() {
  let body;
  try {
    body = JSON.parse($("body").value);
  } catch (e) {
    showError("send-result", { message: "the body is not JSON: " + e.message });
    throw e;
  }
  try {
    const r = await bus.request("send", { queue: $("queue").value, body });
    $("send-result").className = "";
    $("send-result").textContent = "sent, msg_id " + r.msg_id;
    return r.msg_id;
  } catch (e) {
    showError("send-result", e);
    throw e;
  }
}

function onMessage(m) {
  const li = document.createElement("li");
  li.textContent = "#" + m.msg_id + " " + JSON.stringify(m.body) +
    (m.deliveries > 1 ? " (delivery " + m.deliveries + ")" : "");
  li.dataset.msgId = m.msg_id;
  $("messages").prepend(li);
  arrived.push(m);
  bus.ack(m.queue, [m.msg_id]).then(() => li.classList.add("acked"),
    (e) => { li.textContent += " ack failed: " + e.message; });
}

async function subscribe() {
  if (sub) return sub;
  sub = await bus.subscribe($("queue").value, { prefetch: 10 }, onMessage);
  $("subscribe").disabled = true;
  $("subscribe").textContent = "Subscribed to " + $("queue").value;
  return sub;
}

function showLock() {
  if (!held) {
    $("lock-state").textContent = "not held";
  } else {
    const left = Math.max(0, (held.expires - Date.now()) / 1000);
    $("lock-state").textContent = held.name + ": fencing token " + held.token +
      ", lease " + left.toFixed(1) + " s left";
    if (left <= 0) {
      $("lock-state").textContent = held.name + ": lease expired (token " + held.token + ")";
      held = null;
    }
  }
  $("unlock").disabled = !bus || !held;
}

async function lock() {
  const name = $("lock-name").value;
  const ttl = Number($("lock-ttl").value);
  const r = await bus.request("try_lock", { name, ttl });
  if (r.token === null) {
    $("lock-state").textContent = name + ": held by someone else";
    return null;
  }
  held = { name, token: r.token, expires: Date.now() + ttl * 1000 };
  clearInterval(lockTimer);
  lockTimer = setInterval(showLock, 200);
  showLock();
  return r.token;
}

async function unlock() {
  if (!held) return false;
  const r = await bus.request("unlock", { name: held.name, token: held.token });
  const token = held.token;
  held = null;
  clearInterval(lockTimer);
  showLock();
  $("lock-state").textContent = "released (token " + token + ")";
  return r.released;
}

$("connect").onclick = () => connect().catch(() => {});
$("send").onclick = () => send().catch(() => {});
$("subscribe").onclick = () => subscribe().catch((e) => showError("send-result", e));
$("lock").onclick = () => lock().catch((e) => showError("send-result", e));
$("unlock").onclick = () => unlock().catch((e) => showError("send-result", e));

window.svcbusDemo = { arrived, connect, send, subscribe, lock, unlock };
