/* Leveret dashboard: polls /api/overview and one page of /api/queues, draws two live charts and the
 * queue table. The table asks the broker for one sorted, filtered page (PAGE_SIZE rows, only the
 * columns it shows), so a broker with 30,000 queues answers it about as cheaply as one with 30.
 *
 * No build step and no dependencies. Test hooks: window.leveretChartPoints (points in the chart
 * history), window.leveretState (last API answers), data-testid attributes, and each canvas's
 * data-points attribute (visible to `chromium --dump-dom`).
 * Query parameters: ?interval=<ms> (default 1000), ?window=<seconds> (default 300).
 *
 * Credentials live in this closure only: never in sessionStorage, localStorage or a cookie, and not
 * in window.leveretState, so nothing else can pick them up and a reload asks for them again (the
 * login form starts from its defaults, guest/guest). The broker's Content-Security-Policy allows
 * only this file's own script: no inline script or handler in index.html.
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const INTERVAL_MS = Math.max(250, Number(params.get("interval")) || 1000);
  const WINDOW_MS = Math.max(30, Number(params.get("window")) || 300) * 1000;
  const COLORS = {};
  const css = getComputedStyle(document.documentElement);
  for (const k of ["ready", "unacked", "publish", "deliver", "ack", "line", "muted", "text"]) {
    COLORS[k] = css.getPropertyValue("--" + k).trim() || "#888";
  }

  // Earlier dashboards kept the login in sessionStorage: forget what one may have left there.
  try {
    sessionStorage.removeItem("leveret.user");
    sessionStorage.removeItem("leveret.pass");
  } catch (e) { /* storage disabled */ }
  const login = { user: $("login-user").value, pass: $("login-pass").value };

  const state = {
    history: [],        // [{t, ready, unacked, publish, deliver, ack}]
    queueHist: new Map(), // "vhost\u0000name" -> [{t, messages}]
    sortKey: "name",
    sortAsc: true,
    filter: "",
    page: 1,
    pageCount: 1,
    filtered: 0,
    prefilled: false,
    lastOverview: null,
    lastQueues: [],
    polls: 0,
    errors: 0,
  };
  window.leveretState = state;
  window.leveretChartPoints = 0;

  // ---- API ------------------------------------------------------------------------------
  /** base64 of the UTF-8 bytes (btoa alone takes Latin-1 only and throws on anything else). */
  function basic(text) {
    let bin = "";
    for (const b of new TextEncoder().encode(text)) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  async function api(path) {
    const resp = await fetch(path, {
      headers: {
        "Authorization": "Basic " + basic(login.user + ":" + login.pass),
        "X-Requested-With": "XMLHttpRequest",  // no native password dialog on 401
        "Accept": "application/json",
      },
      cache: "no-store",
    });
    if (resp.status === 401) {
      const body = await resp.json().catch(() => ({}));
      const err = new Error(body.reason || "login failed");
      err.auth = true;
      throw err;
    }
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      const err = new Error("HTTP " + resp.status);
      err.pageOutOfRange = body.error === "page_out_of_range";
      throw err;
    }
    return resp.json();
  }

  /** A change (POST/PUT/DELETE): JSON, as the broker's browser-safety check wants. Resolves to the
   *  parsed answer (null for 204); rejects with the broker's reason. */
  async function send(method, path, body) {
    const resp = await fetch(path, {
      method: method,
      headers: {
        "Authorization": "Basic " + basic(login.user + ":" + login.pass),
        "X-Requested-With": "XMLHttpRequest",
        "Content-Type": "application/json",
        "Accept": "application/json",
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const text = await resp.text();
    let doc = null;
    try { doc = text ? JSON.parse(text) : null; } catch (e) { doc = null; }
    if (!resp.ok) throw new Error((doc && doc.reason) || ("HTTP " + resp.status));
    return doc;
  }

  function setStatus(text, ok) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + (ok ? "ok" : "bad");
  }

  // ---- formatting ----------------------------------------------------------------------
  function fmtInt(n) {
    if (n === null || n === undefined) return "–";
    return Number(n).toLocaleString("en-US");
  }
  function fmtRate(r) {
    if (r === null || r === undefined) return "–";
    if (r === 0) return "0";
    if (r < 10) return r.toFixed(1);
    return Math.round(r).toLocaleString("en-US");
  }
  function fmtAxis(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + "k";
    return String(Math.round(v * 10) / 10);
  }
  function rate(stats, key) {
    return stats && stats[key + "_details"] ? stats[key + "_details"].rate : 0;
  }

  // ---- history ---------------------------------------------------------------------------
  function trim(arr, now) {
    while (arr.length && arr[0].t < now - WINDOW_MS) arr.shift();
  }

  /** Fill the chart with the server's recent samples so a reload doesn't start empty. */
  function prefill(ov) {
    const qt = ov.queue_totals || {};
    const ms = ov.message_stats || {};
    const depth = (qt.messages_ready_details || {}).samples || [];
    const unacked = (qt.messages_unacknowledged_details || {}).samples || [];
    if (depth.length < 2) return;
    const shift = Date.now() - depth[0].timestamp;  // server clock -> browser clock
    const counter = (key) => {
      const s = ((ms[key + "_details"] || {}).samples || []).slice().reverse();  // oldest first
      const out = new Map();
      for (let i = 1; i < s.length; i++) {
        const dt = (s[i].timestamp - s[i - 1].timestamp) / 1000;
        out.set(s[i].timestamp, dt > 0 ? Math.max(0, (s[i].sample - s[i - 1].sample) / dt) : 0);
      }
      return out;
    };
    const pub = counter("publish"), del = counter("deliver_get"), ack = counter("ack");
    const un = new Map(unacked.map((s) => [s.timestamp, s.sample]));
    const points = depth.slice().reverse().slice(1).map((s) => ({
      t: s.timestamp + shift,
      ready: s.sample,
      unacked: un.get(s.timestamp) || 0,
      publish: pub.get(s.timestamp) || 0,
      deliver: del.get(s.timestamp) || 0,
      ack: ack.get(s.timestamp) || 0,
    }));
    state.history = points.concat(state.history);
  }

  function record(ov, queues) {
    const now = Date.now();
    const qt = ov.queue_totals || {};
    const ms = ov.message_stats || {};
    state.history.push({
      t: now,
      ready: qt.messages_ready || 0,
      unacked: qt.messages_unacknowledged || 0,
      publish: rate(ms, "publish"),
      deliver: rate(ms, "deliver_get"),
      ack: rate(ms, "ack"),
    });
    trim(state.history, now);
    const seen = new Set();
    for (const q of queues) {
      const key = q.vhost + "\u0000" + q.name;
      seen.add(key);
      if (!state.queueHist.has(key)) state.queueHist.set(key, []);
      const h = state.queueHist.get(key);
      h.push({ t: now, messages: q.messages || 0 });
      trim(h, now);
    }
    for (const key of Array.from(state.queueHist.keys())) if (!seen.has(key)) state.queueHist.delete(key);
  }

  // ---- chart -----------------------------------------------------------------------------
  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  /**
   * Draw series over the shared history on a canvas.
   * series: [{key, color, fill}]; returns the number of points drawn per series.
   */
  function drawChart(canvas, series) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, h = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const pad = { l: 46, r: 10, t: 8, b: 22 };
    const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
    const pts = state.history;
    const tEnd = pts.length ? pts[pts.length - 1].t : Date.now();
    // The x axis grows with the history from one minute up to the full window.
    const span = Math.min(WINDOW_MS, Math.max(60000, pts.length ? tEnd - pts[0].t : 0));
    const tStart = tEnd - span;
    let max = 0;
    for (const p of pts) for (const s of series) max = Math.max(max, p[s.key]);
    max = niceMax(max * 1.1);
    const x = (t) => pad.l + ((t - tStart) / span) * pw;
    const y = (v) => pad.t + ph - (v / max) * ph;

    // grid + labels
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = COLORS.muted;
    ctx.strokeStyle = COLORS.line;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, yy = Math.round(y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(pad.l, yy); ctx.lineTo(w - pad.r, yy); ctx.stroke();
      ctx.fillText(fmtAxis(v), pad.l - 6, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const stepS = span <= 60000 ? 10 : span <= 150000 ? 30 : span <= 360000 ? 60 : 120;
    for (let sec = 0; sec * 1000 <= span; sec += stepS) {
      const label = sec === 0 ? "now" : sec % 60 === 0 ? "-" + sec / 60 + "m" : "-" + sec + "s";
      ctx.fillText(label, Math.max(pad.l + 8, x(tEnd - sec * 1000)), h - pad.b + 6);
    }
    window.leveretChartSpanMs = span;

    // series
    const visible = pts.filter((p) => p.t >= tStart);
    for (const s of series) {
      if (!visible.length) continue;
      ctx.beginPath();
      visible.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[s.key])) : ctx.moveTo(x(p.t), y(p[s.key]))));
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.stroke();
      if (s.fill) {
        ctx.lineTo(x(visible[visible.length - 1].t), y(0));
        ctx.lineTo(x(visible[0].t), y(0));
        ctx.closePath();
        ctx.globalAlpha = 0.12;
        ctx.fillStyle = s.color;
        ctx.fill();
        ctx.globalAlpha = 1;
      }
      const last = visible[visible.length - 1];
      ctx.beginPath();
      ctx.arc(x(last.t), y(last[s.key]), 3, 0, Math.PI * 2);
      ctx.fillStyle = s.color;
      ctx.fill();
    }
    canvas.dataset.points = String(visible.length);
    return visible.length;
  }

  function drawCharts() {
    const n1 = drawChart($("depth-chart"), [
      { key: "ready", color: COLORS.ready, fill: true },
      { key: "unacked", color: COLORS.unacked, fill: true },
    ]);
    const n2 = drawChart($("rate-chart"), [
      { key: "publish", color: COLORS.publish },
      { key: "deliver", color: COLORS.deliver },
      { key: "ack", color: COLORS.ack },
    ]);
    window.leveretChartPoints = Math.min(n1, n2);
    const span = window.leveretChartSpanMs || 60000;
    $("window-label").textContent = span < 120000 ? "last " + Math.round(span / 1000) + " s"
      : "last " + Math.round(span / 60000) + " min";
  }

  // ---- table -----------------------------------------------------------------------------
  function sparkline(hist) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", "90");
    svg.setAttribute("height", "20");
    svg.setAttribute("class", "spark");
    if (hist && hist.length > 1) {
      const max = Math.max(1, ...hist.map((p) => p.messages));
      const t0 = hist[0].t, span = Math.max(1, hist[hist.length - 1].t - t0);
      const pl = document.createElementNS(ns, "polyline");
      pl.setAttribute("points", hist.map((p) =>
        ((p.t - t0) / span * 88 + 1).toFixed(1) + "," + (19 - (p.messages / max) * 17).toFixed(1)).join(" "));
      pl.setAttribute("fill", "none");
      pl.setAttribute("stroke", COLORS.ready);
      pl.setAttribute("stroke-width", "1.5");
      svg.appendChild(pl);
    }
    return svg;
  }

  const PAGE_SIZE = 100;
  const COLUMNS = ["vhost", "name", "durable", "auto_delete", "exclusive", "type", "messages_ready",
    "messages_unacknowledged", "messages", "consumers", "message_stats.publish_details",
    "message_stats.deliver_get_details", "message_stats.ack_details"].join(",");
  // Table column -> the API's sort path. No sort parameter means the API's own (vhost, name)
  // order, which it can page without rendering every queue.
  const SORT_PATHS = { publish: "message_stats.publish_details.rate",
    deliver: "message_stats.deliver_get_details.rate", ack: "message_stats.ack_details.rate" };

  function queuesPath() {
    const q = new URLSearchParams({ page: String(state.page), page_size: String(PAGE_SIZE), columns: COLUMNS });
    if (state.sortKey !== "name" && state.sortKey !== "vhost") q.set("sort", SORT_PATHS[state.sortKey] || state.sortKey);
    if (!state.sortAsc) q.set("sort_reverse", "true");
    if (state.filter) q.set("name", state.filter);
    return "/api/queues?" + q.toString();
  }

  async function fetchQueues() {
    try {
      return await api(queuesPath());
    } catch (e) {
      if (!e.pageOutOfRange) throw e;
      state.page = 1;  // the list shrank under us
      return api(queuesPath());
    }
  }

  function renderTable(queues) {
    const body = $("queue-rows");
    const rows = queues;
    const frag = document.createDocumentFragment();
    for (const q of rows) {
      const ms = q.message_stats || {};
      const tr = document.createElement("tr");
      tr.dataset.testid = "queue-row";
      tr.setAttribute("data-testid", "queue-row");
      tr.dataset.vhost = q.vhost;
      tr.dataset.name = q.name;
      const hist = state.queueHist.get(q.vhost + "\u0000" + q.name);
      const growing = hist && hist.length > 2 && hist[hist.length - 1].messages > hist[0].messages;
      if (q.consumers === 0 && q.messages_ready > 0 && growing) tr.className = "filling";
      const cell = (cls, text, testid) => {
        const td = document.createElement("td");
        if (cls) td.className = cls;
        td.textContent = text;
        if (testid) td.setAttribute("data-testid", testid);
        tr.appendChild(td);
        return td;
      };
      cell("", q.vhost, "q-vhost");
      const name = cell("name", q.name, "q-name");
      for (const [flag, label] of [["durable", "D"], ["auto_delete", "AD"], ["exclusive", "Excl"]]) {
        if (q[flag]) {
          const tag = document.createElement("span");
          tag.className = "tag";
          tag.title = flag.replace("_", "-");
          tag.textContent = label;
          name.appendChild(tag);
        }
      }
      cell("", q.type, "q-type");
      cell("num ready", fmtInt(q.messages_ready), "q-ready");
      cell("num unacked", fmtInt(q.messages_unacknowledged), "q-unacked");
      cell("num", fmtInt(q.messages), "q-messages");
      cell("", "", "q-spark").appendChild(sparkline(hist));
      cell("num", fmtInt(q.consumers), "q-consumers");
      cell("num", fmtRate(rate(ms, "publish")), "q-publish");
      cell("num", fmtRate(rate(ms, "deliver_get")), "q-deliver");
      cell("num", fmtRate(rate(ms, "ack")), "q-ack");
      const manage = document.createElement("button");
      manage.type = "button";
      manage.textContent = "Manage";
      manage.setAttribute("data-testid", "q-manage");
      manage.addEventListener("click", () => openQueue(q.vhost, q.name));
      cell("", "", "").appendChild(manage);
      frag.appendChild(tr);
    }
    body.replaceChildren(frag);
    $("queue-count").textContent = "(" + state.filtered + ")";
    $("no-queues").hidden = state.filtered > 0 || !!state.filter;
    $("page-info").textContent = state.pageCount > 1 ? "page " + state.page + " of " + state.pageCount : "";
    $("page-prev").disabled = state.page <= 1;
    $("page-next").disabled = state.page >= state.pageCount;
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.classList.toggle("sorted", th.dataset.sort === state.sortKey);
      th.classList.toggle("asc", th.dataset.sort === state.sortKey && state.sortAsc);
    }
  }

  function renderCards(ov) {
    const qt = ov.queue_totals || {}, ot = ov.object_totals || {}, ms = ov.message_stats || {};
    $("t-ready").textContent = fmtInt(qt.messages_ready);
    $("t-unacked").textContent = fmtInt(qt.messages_unacknowledged);
    $("t-consumers").textContent = fmtInt(ot.consumers);
    $("t-connections").textContent = fmtInt(ot.connections);
    $("t-publish").textContent = fmtRate(rate(ms, "publish"));
    $("t-deliver").textContent = fmtRate(rate(ms, "deliver_get"));
    $("t-ack").textContent = fmtRate(rate(ms, "ack"));
    // "node" is for monitoring users and administrators only (as RabbitMQ); others see the cluster name.
    $("node-name").textContent = ov.node || ov.cluster_name || "";
    $("node-version").textContent = (ov.product_name || "") + " " + (ov.product_version || "") +
      " · RabbitMQ API " + (ov.rabbitmq_version || "");
    document.title = "Leveret · " + fmtInt(qt.messages_ready) + " ready";
    // The Prometheus listener's real port (listeners are shown to monitoring users and administrators).
    const prom = (ov.listeners || []).find(function (l) { return l.protocol === "http/prometheus"; });
    if (prom) {
      $("metrics-port").textContent = ":" + prom.port + "/metrics";
      $("metrics").hidden = false;
    }
  }

  // ---- one queue: publish, get, purge, delete --------------------------------------------
  const panel = { vhost: null, name: null };

  function queuePath(suffix) {
    return "/api/queues/" + encodeURIComponent(panel.vhost) + "/" + encodeURIComponent(panel.name) + (suffix || "");
  }

  function result(text, ok) {
    const el = $("qp-result");
    el.textContent = text;
    el.className = "qp-result " + (ok ? "ok" : "bad");
  }

  function openQueue(vhost, name) {
    panel.vhost = vhost;
    panel.name = name;
    $("qp-name").textContent = name;
    $("qp-vhost").textContent = "in vhost " + vhost;
    $("qp-messages").replaceChildren();
    result("", true);
    $("queue-panel").hidden = false;
    $("queue-panel").scrollIntoView({ block: "nearest" });
  }
  window.leveretOpenQueue = openQueue;

  /** The confirmation dialog: resolves true for OK. One question at a time: asking again answers
   *  an earlier one still open "no"; a close event delivered late (the dialog open again) is ignored. */
  let pendingConfirm = null;
  $("confirm").addEventListener("close", () => {
    const dialog = $("confirm");
    if (dialog.open || pendingConfirm === null) return;
    const resolve = pendingConfirm;
    pendingConfirm = null;
    resolve(dialog.returnValue === "ok");
  });
  function confirmAction(text, okLabel) {
    result("", true);
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    if (pendingConfirm !== null) pendingConfirm(false);
    return new Promise((resolve) => {
      pendingConfirm = resolve;
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  function jsonField(id, what) {
    const raw = $(id).value.trim();
    if (!raw) return {};
    const v = JSON.parse(raw);
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error(what + " must be a JSON object");
    return v;
  }

  $("qp-close").addEventListener("click", () => { $("queue-panel").hidden = true; });

  $("qp-publish").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    result("", true);
    try {
      const properties = jsonField("qp-props", "Properties");
      const headers = jsonField("qp-headers", "Headers");
      if (Object.keys(headers).length) properties.headers = headers;
      properties.delivery_mode = Number($("qp-delivery").value);
      const answer = await send("POST", "/api/exchanges/" + encodeURIComponent(panel.vhost) + "/amq.default/publish", {
        routing_key: panel.name, properties: properties, payload: $("qp-payload").value, payload_encoding: "string",
      });
      result(answer.routed ? "Message published." : "Message published, but not routed.", answer.routed);
      refreshTable();
    } catch (e) {
      result(e.message, false);
    }
  });

  function renderMessages(msgs) {
    const out = [];
    msgs.forEach((m, i) => {
      const box = document.createElement("dl");
      box.className = "qp-message";
      box.setAttribute("data-testid", "qp-message");
      const head = document.createElement("h4");
      head.textContent = "Message " + (i + 1);
      box.appendChild(head);
      const props = m.properties && !Array.isArray(m.properties) ? m.properties : {};
      for (const [k, v] of [["Exchange", m.exchange || "(AMQP default)"], ["Routing Key", m.routing_key],
        ["Redelivered", String(m.redelivered)], ["Properties", JSON.stringify(props)],
        ["Payload", m.payload_bytes + " bytes, encoding: " + m.payload_encoding], ["", m.payload]]) {
        const dt = document.createElement("dt");
        dt.textContent = k;
        const dd = document.createElement("dd");
        dd.textContent = v;
        if (!k) dd.setAttribute("data-testid", "qp-payload-out");
        box.append(dt, dd);
      }
      out.push(box);
    });
    $("qp-messages").replaceChildren(...out);
  }

  $("qp-get").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    result("", true);
    try {
      const msgs = await send("POST", queuePath("/get"), {
        count: Math.max(1, Number($("qp-count").value) || 1), ackmode: $("qp-ackmode").value,
        encoding: $("qp-encoding").value, truncate: 50000,
      });
      renderMessages(msgs);
      result(msgs.length ? "" : "Queue is empty", msgs.length > 0);
      refreshTable();
    } catch (e) {
      result(e.message, false);
    }
  });

  $("qp-purge").addEventListener("click", async () => {
    if (!await confirmAction("Purge all ready messages of queue '" + panel.name + "'?", "Purge")) return;
    try {
      await send("DELETE", queuePath("/contents"));
      result("Queue purged.", true);
      refreshTable();
    } catch (e) {
      result(e.message, false);
    }
  });

  $("qp-delete").addEventListener("click", async () => {
    if (!await confirmAction("Delete queue '" + panel.name + "'? Its messages go with it; this cannot be undone.",
      "Delete")) return;
    try {
      await send("DELETE", queuePath(""));
      $("queue-panel").hidden = true;
      setStatus("queue " + panel.name + " deleted", true);
      refreshTable();
    } catch (e) {
      result(e.message, false);
    }
  });

  // ---- loop ------------------------------------------------------------------------------
  async function poll() {
    try {
      const ovPath = state.prefilled ? "/api/overview"
        : "/api/overview?lengths_age=" + WINDOW_MS / 1000 + "&lengths_incr=1&msg_rates_age=" +
          WINDOW_MS / 1000 + "&msg_rates_incr=1";
      const [ov, paged] = await Promise.all([api(ovPath), fetchQueues()]);
      const queues = paged.items;
      state.filtered = paged.filtered_count;
      state.pageCount = Math.max(1, paged.page_count);
      if (!state.prefilled) {
        state.prefilled = true;
        try { prefill(ov); } catch (e) { console.warn("prefill failed", e); }
      }
      state.lastOverview = ov;
      state.lastQueues = queues;
      state.polls += 1;
      record(ov, queues);
      renderCards(ov);
      renderTable(queues);
      drawCharts();
      setStatus("live · " + (INTERVAL_MS / 1000) + "s", true);
      $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
    } catch (e) {
      state.errors += 1;
      setStatus(e.auth ? "login failed" : "disconnected", false);
    } finally {
      setTimeout(poll, INTERVAL_MS);
    }
  }

  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    login.user = $("login-user").value;
    login.pass = $("login-pass").value;
    setStatus("connecting…", true);
  });
  // Filter, sort and page are the broker's job: ask again at once for the new page.
  async function refreshTable() {
    try {
      const paged = await fetchQueues();
      state.filtered = paged.filtered_count;
      state.pageCount = Math.max(1, paged.page_count);
      state.lastQueues = paged.items;
      renderTable(paged.items);
    } catch (e) {
      state.errors += 1;
    }
  }
  $("filter").addEventListener("input", (ev) => {
    state.filter = ev.target.value;
    state.page = 1;
    refreshTable();
  });
  $("page-prev").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); refreshTable(); });
  $("page-next").addEventListener("click", () => { state.page = Math.min(state.pageCount, state.page + 1); refreshTable(); });
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.sortAsc = state.sortKey === key ? !state.sortAsc : key === "name" || key === "vhost";
      state.sortKey = key;
      state.page = 1;
      refreshTable();
    });
  }
  window.addEventListener("resize", drawCharts);
  drawCharts();
  poll();
})();
