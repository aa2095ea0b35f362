/* Telltale dashboard: the live page (polls the JSON API) and static reports (data embedded
   as window.TELLTALE_REPORT) share this renderer. Charts: uPlot (vendored, MIT). */
(function () {
  "use strict";

  var REPORT = window.TELLTALE_REPORT || null;
  var ALERTS_MS = 500;      // alert records per run: a new one refreshes the run at once
  var RUNS_MS = 2000;       // the run list
  var RUN_MS = 2000;        // the selected run's charts
  var COLORS = ["#3b6fd8", "#e07b00", "#2e8b57", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d",
                "#d35400", "#2c3e50", "#b7950b"];
  var SCORE_COLORS = ["#b03a2e", "#7d3c98", "#117a65", "#a04000"];
  var SEV_ICON = {critical: "◆", warning: "▲", info: "●"};
  var HEALTH_ICON = {critical: "◆", warning: "▲", recovered: "✓", ok: "✓"};
  var charts = {};          // panel key -> {u, sig, alerts, zoom}
  var zooms = {};           // panel key -> {min, max} kept across polls and re-renders
  var logPref = {};         // panel key -> true/false chosen by the user
  var alertsById = {};
  var current = null;       // selected run id
  var lastView = null;
  var smoothing = 0;        // EMA weight 0..0.99
  var opener = null;        // element focused before the alert popup opened
  var params = new URLSearchParams(location.search);
  var K = params.get("k");  // band width from ?k= (checked by the API)

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") e.textContent = attrs[k];
        else if (k === "cls") e.className = attrs[k];
        else e.setAttribute(k, attrs[k]);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c == null) continue;
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }

  function fmt(v) {
    if (v == null) return "–";
    if (typeof v !== "number") return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return String(Math.round(v * 10000) / 10000);
  }

  function duration(s) {
    if (s == null) return "–";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(2) + " h";
  }

  function showError(msg) {
    var e = document.getElementById("error");
    if (!e) return;
    e.hidden = !msg;
    e.textContent = msg || "";
  }

  function getJSON(url) {
    return fetch(url, {cache: "no-store"}).then(function (r) {
      return r.json().then(function (doc) {
        if (!r.ok) throw new Error(doc.error || ("HTTP " + r.status));
        return doc;
      });
    });
  }

  function badge(sev, extra) {  // severity by shape and text, not colour alone
    return el("span", {cls: "badge " + sev},
              el("span", {cls: "icon", "aria-hidden": "true", text: SEV_ICON[sev] || HEALTH_ICON[sev] || ""}),
              " " + sev + (extra || ""));
  }

  // -- the URL: #<run>, or #run=R&panel=P&step=S, or #compare=A,B&metric=M ----------------

  function readHash() {
    var h = location.hash.replace(/^#/, "");
    if (!h) return {};
    if (h.indexOf("=") < 0) return {run: decodeURIComponent(h)};
    var p = new URLSearchParams(h), out = {};
    p.forEach(function (v, k) { out[k] = v; });
    return out;
  }

  function hashFor(o) {
    var p = new URLSearchParams();
    Object.keys(o).forEach(function (k) { if (o[k] != null && o[k] !== "") p.set(k, o[k]); });
    return "#" + p.toString();
  }

  function apiRun(run) {
    return "api/run/" + encodeURIComponent(run) + (K != null ? "?k=" + encodeURIComponent(K) : "");
  }

  // -- alert details (a dialog: focus moves in, Esc closes and returns focus) -----------------

  function closeAlert() {
    var box = document.getElementById("alert-detail");
    if (box.hidden) return;
    box.hidden = true;
    if (opener && document.contains(opener)) opener.focus();
    opener = null;
  }

  function showAlert(a, from) {
    var box = document.getElementById("alert-detail");
    opener = from || document.activeElement;
    box.innerHTML = "";
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-label", a.severity + " alert on " + a.metric + " at step " + a.step);
    box.className = a.severity;
    var close = el("button", {type: "button", cls: "close", text: "×", "aria-label": "close (Esc)"});
    close.onclick = closeAlert;
    box.appendChild(close);
    box.appendChild(el("h4", null, badge(a.severity, " · " + a.status),
      " " + a.metric + " at step " + a.step + (a.rank && a.rank !== "0" ? " (rank " + a.rank + ")" : "")));
    box.appendChild(el("div", {cls: "message"}, el("b", {text: "Alert: "}), a.message || ""));
    box.appendChild(el("div", {cls: "explanation", text: a.explanation || a.message}));
    if (a.cause) box.appendChild(el("div", null, el("b", {text: "Likely cause: "}), a.cause));
    if (a.action) box.appendChild(el("div", null, el("b", {text: "Next step: "}), a.action));
    if (a.contributors && a.contributors.length) {
      box.appendChild(el("div", null, el("b", {text: "Contributors: "}), a.contributors.join(", ")));
    }
    if (a.last_step != null && a.last_step !== a.step) {
      box.appendChild(el("div", {cls: "muted", text: "steps " + a.step + "–" + a.last_step}));
    }
    if (a.resolution) box.appendChild(el("div", {cls: "muted", text: a.resolution}));
    if (a.ended) box.appendChild(el("div", {cls: "muted", text: "the run ended before it recovered"}));
    box.appendChild(el("div", {cls: "muted",
      text: a.detector + " detector, score " + fmt(a.score) + " (0..1), id " + a.id}));
    box.hidden = false;
    close.focus();
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") closeAlert();
  });

  function markerFor(a) {
    var m = el("button", {type: "button", "data-id": a.id, "data-step": a.step,
                          "data-metric": a.metric});
    m.className = "alert-marker " + a.severity + " " + a.status;
    m.title = a.explanation || a.message;
    m.setAttribute("aria-label", a.severity + " alert, " + a.status + ": " + a.metric +
                   " at step " + a.step + ". " + (a.message || ""));
    m.appendChild(el("span", {cls: "shape", "aria-hidden": "true", text: SEV_ICON[a.severity] || "●"}));
    m.onclick = function (ev) { ev.stopPropagation(); showAlert(a, m); };
    return m;
  }

  function overlayPlugin(entry) {
    function place(u) {  // markers and non-finite bands persist across redraws: moved, not rebuilt
      var over = u.over, keep = {};
      entry.alerts.forEach(function (a) {
        if (a.step == null) return;
        var x = u.valToPos(a.step, "x");
        if (!(x >= 0 && x <= over.clientWidth + 1)) return;
        var key = a.key || (a.id + "@" + a.metric);
        keep[key] = true;
        var m = over.querySelector('.alert-marker[data-key="' + CSS.escape(key) + '"]');
        if (!m) {
          m = markerFor(a);
          m.setAttribute("data-key", key);
          over.appendChild(m);
        }
        m.style.left = x + "px";
      });
      Array.prototype.slice.call(over.querySelectorAll(".alert-marker")).forEach(function (m) {
        if (!keep[m.getAttribute("data-key")]) m.remove();
      });
      Array.prototype.slice.call(over.querySelectorAll(".nonfinite-band")).forEach(function (b) { b.remove(); });
      (entry.nonfinite || []).forEach(function (st) {
        var xs = u.data[0], last = xs[xs.length - 1];
        var x0 = Math.max(0, u.valToPos(st[0] - 0.5, "x"));
        var x1 = Math.min(over.clientWidth, u.valToPos(st[1] >= last ? st[1] : st[1] + 0.5, "x"));
        if (!(x1 > 0 && x0 < over.clientWidth)) return;
        var label = st[0] === st[1] ? "non-finite at step " + st[0]
                                    : "non-finite (NaN/inf), steps " + st[0] + "–" + st[1];
        var b = el("div", {cls: "nonfinite-band", "data-from": st[0], "data-to": st[1],
                           title: label}, el("span", {text: st[1] >= last && st[0] !== st[1] ? "NaN from step " + st[0] : "NaN"}));
        b.style.left = x0 + "px";
        b.style.width = Math.max(2, x1 - x0) + "px";
        over.insertBefore(b, over.firstChild);
      });
    }
    return {hooks: {draw: [place]}};
  }

  // -- charts ----------------------------------------------------------------------------

  function chartWidth(panel) {
    return Math.max(320, (panel.clientWidth || 600) - 24);
  }

  function ema(values, w) {  // debiased exponential moving average; gaps stay gaps
    if (!w) return values;
    var s = 0, n = 0, out = new Array(values.length);
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v == null) { out[i] = null; continue; }
      s = w * s + (1 - w) * v; n++;
      out[i] = s / (1 - Math.pow(w, n));
    }
    return out;
  }

  function visibleRange(u, idxs, log) {  // min/max of the line series in the x window
    var xs = u.data[0], lo = Infinity, hi = -Infinity;
    var x0 = u.scales.x.min, x1 = u.scales.x.max;
    idxs.forEach(function (si) {
      var ys = u.data[si];
      if (!ys) return;
      for (var i = 0; i < ys.length; i++) {
        var y = ys[i];
        if (y == null || (log && y <= 0)) continue;
        if (x0 != null && (xs[i] < x0 || xs[i] > x1)) continue;
        if (y < lo) lo = y;
        if (y > hi) hi = y;
      }
    });
    return lo <= hi ? [lo, hi] : null;
  }

  function fittedRange(idxs, log) {  // y fitted to the data lines (the band is clipped to it)
    return function (u, dmin, dmax) {
      var r = visibleRange(u, idxs, log);
      if (!r) return log ? [1, 10] : [0, 1];
      if (log) return [r[0] / 1.3, r[1] * 1.3];
      var pad = (r[1] - r[0]) * 0.06 || Math.abs(r[0]) * 0.05 || 1;
      return [r[0] - pad, r[1] + pad];
    };
  }

  function spansDecades(lines) {  // all positive and max/min > 100: log scale by default
    var lo = Infinity, hi = -Infinity, neg = false;
    lines.forEach(function (vs) { vs.forEach(function (v) {
      if (v == null) return;
      if (v <= 0) neg = true;
      else { if (v < lo) lo = v; if (v > hi) hi = v; }
    }); });
    return {canLog: !neg && hi > 0, wide: !neg && hi / lo > 100};
  }

  function upsertChart(key, panel, holder, opts, data, extra) {
    var sig = opts.series.map(function (s) { return (s.label || "") + (s.scale || ""); }).join("|") +
              "|" + JSON.stringify(opts.scales.y && opts.scales.y.distr || 1);
    var c = charts[key];
    if (c && c.sig === sig && holder.contains(c.u.root)) {
      c.alerts = extra.alerts || [];
      c.nonfinite = extra.nonfinite || [];
      c.internal = true;
      c.u.setData(data);
      if (zooms[key]) c.u.setScale("x", zooms[key]);
      c.internal = false;
      return c.u;
    }
    if (c) c.u.destroy();
    holder.innerHTML = "";
    var entry = {sig: sig, alerts: extra.alerts || [], nonfinite: extra.nonfinite || [], internal: true};
    opts.width = chartWidth(panel);
    opts.legend = {live: true};
    opts.cursor = {sync: {key: "telltale-run", setSeries: false}, focus: {prox: 16}};
    opts.plugins = [overlayPlugin(entry)];
    opts.hooks = {setScale: [function (u, sk) {
      if (sk !== "x" || entry.internal) return;
      var xs = u.data[0];
      var full = u.scales.x.min <= xs[0] && u.scales.x.max >= xs[xs.length - 1];
      zooms[key] = full ? null : {min: u.scales.x.min, max: u.scales.x.max};
      var rb = panel.querySelector("button.reset-zoom");
      if (rb) rb.hidden = !zooms[key];
    }]};
    entry.u = new uPlot(opts, data, holder);
    entry.u.root.__u = entry.u;  // for the browser tests and the console
    if (zooms[key]) entry.u.setScale("x", zooms[key]);
    entry.internal = false;
    var cv = entry.u.root.querySelector("canvas");
    if (cv) { cv.setAttribute("role", "img"); }
    charts[key] = entry;
    return entry.u;
  }

  function labelChart(key, text) {
    var c = charts[key];
    var cv = c && c.u.root.querySelector("canvas");
    if (cv) cv.setAttribute("aria-label", text);
  }

  function panelFor(container, key, title) {
    var id = "panel-" + key.replace(/[^A-Za-z0-9_-]/g, "_");
    var p = document.getElementById(id);
    if (!p) {
      var reset = el("button", {type: "button", cls: "reset-zoom", text: "reset zoom"});
      reset.hidden = !zooms[key];
      reset.onclick = function () { resetZoom(key); };
      p = el("section", {cls: "panel", id: id, "data-panel": key, "aria-label": title},
             el("div", {cls: "panel-head"}, el("h3", {text: title}), el("span", {cls: "controls"}, reset)),
             el("div", {cls: "chart"}), el("div", {cls: "notes"}));
      container.appendChild(p);
    }
    return p;
  }

  function resetZoom(key) {
    zooms[key] = null;
    var c = charts[key];
    if (c) {
      c.internal = true;
      var xs = c.u.data[0];
      c.u.setScale("x", {min: xs[0], max: xs[xs.length - 1]});
      c.internal = false;
    }
    var p = document.querySelector('.panel[data-panel="' + CSS.escape(key) + '"] button.reset-zoom');
    if (p) p.hidden = true;
  }

  function logToggle(panel, key, info) {
    var ctl = panel.querySelector(".controls");
    var box = ctl.querySelector("input.log-scale");
    if (!box) {
      box = el("input", {type: "checkbox", cls: "log-scale"});
      box.onchange = function () { logPref[key] = box.checked; if (lastView) renderRun(lastView); };
      ctl.insertBefore(el("label", {cls: "log-label"}, box, " log scale"), ctl.firstChild);
    }
    var on = info.canLog && (logPref[key] != null ? logPref[key] : info.wide);
    box.checked = on;
    box.disabled = !info.canLog;
    box.parentNode.title = info.canLog ? (info.wide ? "on by default: the values span more than two decades" : "")
                                       : "values ≤ 0: no log scale";
    return on;
  }

  function alertList(alerts) {
    if (!alerts.length) return null;
    var ul = el("ul", {cls: "panel-alerts"});
    alerts.slice(0, 8).forEach(function (a) {
      var b = el("button", {type: "button", cls: "linkish"}, badge(a.severity, " · " + a.status),
                 " step " + a.step + ": " + (a.message || ""));
      b.onclick = function () { showAlert(a, b); };
      ul.appendChild(el("li", null, b));
    });
    if (alerts.length > 8) ul.appendChild(el("li", {cls: "muted",
      text: "… " + (alerts.length - 8) + " more in the incidents table"}));
    return ul;
  }

  function trainingPanel(container, view, p) {
    var key = "train-" + p.metric;
    var panel = panelFor(container, key, p.metric + (p.kind === "eval" ? " (eval)" : ""));
    var raw = p.lines.map(function (ln) { return ln.values; });
    var info = spansDecades(raw);
    var log = logToggle(panel, key, info);
    var data = [p.steps], series = [{label: "step"}], lineIdx = [];
    p.lines.forEach(function (ln, i) {
      if (smoothing) {
        data.push(ln.values);
        series.push({label: ln.label + " (raw)", stroke: COLORS[i % COLORS.length] + "55", width: 1,
                     scale: "y", spanGaps: false});
        lineIdx.push(data.length - 1);
      }
      data.push(ema(ln.values, smoothing));
      series.push({label: ln.label + (smoothing ? " (EMA " + smoothing + ")" : ""),
                   stroke: COLORS[i % COLORS.length], width: 1.5, scale: "y", spanGaps: false});
      lineIdx.push(data.length - 1);
    });
    var bands = [];
    if (p.band) {
      var k = view.k;
      var pos = function (vs) { return log ? vs.map(function (v) { return v != null && v > 0 ? v : null; }) : vs; };
      data.push(pos(p.band.hi), pos(p.band.lo), pos(p.band.mean));
      var hi = data.length - 3, lo = data.length - 2;
      series.push({label: "mean+" + k + "σ", stroke: "rgba(59,111,216,.35)", width: 1, scale: "y"});
      series.push({label: "mean−" + k + "σ", stroke: "rgba(59,111,216,.35)", width: 1, scale: "y"});
      series.push({label: "window mean", stroke: "rgba(59,111,216,.6)", width: 1, dash: [4, 4],
                   scale: "y"});
      bands.push({series: [hi, lo], fill: "rgba(59,111,216,.10)"});
    }
    var dets = Object.keys(p.scores);
    dets.forEach(function (d, i) {
      data.push(p.scores[d]);
      series.push({label: "score " + d, stroke: SCORE_COLORS[i % SCORE_COLORS.length], width: 1,
                   dash: [2, 3], scale: "score"});
    });
    var yScale = {range: fittedRange(lineIdx, log)};
    if (log) { yScale.distr = 3; yScale.log = 10; }
    var axes = [{label: "step"}, {scale: "y", label: p.metric + (log ? " (log)" : ""), size: 64,
                                  labelSize: 18}];
    if (dets.length) axes.push({scale: "score", side: 1, label: "anomaly score 0–1", size: 48,
                                grid: {show: false}, values: function (u, ts) {
                                  return ts.map(function (t) { return t.toFixed(1); }); }});
    var alerts = p.alert_ids.map(function (id) { return alertsById[id]; }).filter(Boolean);
    upsertChart(key, panel, panel.querySelector(".chart"), {
      height: 240, series: series, bands: bands, axes: axes,
      scales: {x: {time: false}, y: yScale, score: {range: [0, 1]}}
    }, data, {alerts: alerts, nonfinite: p.nonfinite});
    var nf = (p.nonfinite || []).map(function (s) { return s[0] === s[1] ? "step " + s[0] : "steps " + s[0] + "–" + s[1]; });
    labelChart(key, p.metric + " by step, " + (p.steps.length ? p.steps[0] + " to " + p.steps[p.steps.length - 1] : "no data") +
      (log ? ", log scale" : "") + "; " + alerts.length + " alert" + (alerts.length === 1 ? "" : "s") +
      (nf.length ? "; non-finite values at " + nf.join(", ") : ""));
    var notes = panel.querySelector(".notes");
    notes.innerHTML = "";
    var legend = [];
    if (p.band) legend.push("shaded band: mean ± " + view.k + "·std of the last closed window before each step (rank " +
                            p.focus_rank + "), clipped to the data's range");
    if (dets.length) legend.push("dashed, right axis: anomaly score of " + dets.join(", ") +
                                 " on one 0..1 scale (0 = normal, 1 = most anomalous; alerts fire above the detector's threshold)");
    if (nf.length) legend.push("red hatch: non-finite values (NaN/inf) at " + nf.join(", "));
    if (legend.length) notes.appendChild(el("p", {cls: "note", text: legend.join("; ")}));
    var list = alertList(alerts);
    if (list) notes.appendChild(list);
  }

  function colorFor(t) {  // viridis-like ramp, t in 0..1
    var stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    var i = Math.min(stops.length - 2, Math.floor(t)), f = t - i, a = stops[i], b = stops[i + 1];
    return "rgb(" + [0, 1, 2].map(function (j) { return Math.round(a[j] + f * (b[j] - a[j])); })
      .join(",") + ")";
  }

  function heatmapPanel(container, h) {
    var key = "internals-" + h.family;
    var panel = panelFor(container, key, h.family + " per layer");
    var holder = panel.querySelector(".chart");
    holder.innerHTML = "";
    var ROW = 18;
    var logScale = /norm|ratio/.test(h.family);
    var vals = [];
    h.z.forEach(function (row) { row.forEach(function (v) {
      if (v != null && (!logScale || v > 0)) vals.push(logScale ? Math.log10(v) : v);
    }); });
    var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
    var labels = el("div", {cls: "labels"});
    h.layers.forEach(function (l) {
      var d = el("div", {text: l}); d.style.height = ROW + "px"; d.style.lineHeight = ROW + "px";
      labels.appendChild(d);
    });
    var width = Math.max(200, chartWidth(panel) - 140);
    var cv = el("canvas", {width: width, height: h.layers.length * ROW, role: "img",
                           "aria-label": h.family + " per layer heatmap, " + h.layers.length + " layers, steps " +
                           h.steps[0] + " to " + h.steps[h.steps.length - 1]});
    var ctx = cv.getContext("2d");
    var cw = width / Math.max(1, h.steps.length);
    h.z.forEach(function (row, r) {
      row.forEach(function (v, c) {
        if (v == null || (logScale && v <= 0)) ctx.fillStyle = "#e3e3e3";
        else {
          var x = logScale ? Math.log10(v) : v;
          ctx.fillStyle = colorFor(hi > lo ? (x - lo) / (hi - lo) : 0.5);
        }
        ctx.fillRect(Math.floor(c * cw), r * ROW, Math.ceil(cw), ROW);
      });
    });
    cv.onmousemove = function (ev) {
      var c = Math.floor(ev.offsetX / cw), r = Math.floor(ev.offsetY / ROW);
      if (h.steps[c] == null || !h.layers[r]) return;
      cv.title = h.layers[r] + " step " + h.steps[c] + ": " + fmt(h.z[r][c]);
    };
    var plot = el("div", {cls: "heatmap-plot"}, cv);
    var axis = el("div", {cls: "heatmap-axis", "aria-hidden": "true"});
    axis.style.width = width + "px";
    var nt = Math.min(6, h.steps.length);
    for (var t = 0; t < nt; t++) {
      var ci = Math.round(t * (h.steps.length - 1) / Math.max(1, nt - 1));
      var tick = el("span", {text: String(h.steps[ci])});
      tick.style.left = ((ci + 0.5) * cw) + "px";
      axis.appendChild(tick);
    }
    plot.appendChild(axis);
    lastView.alerts.filter(function (a) {
      return a.metric && a.metric.indexOf(h.family + "/") === 0;
    }).forEach(function (a) {
      var ci = 0;
      while (ci < h.steps.length - 1 && h.steps[ci] < a.step) ci++;
      var m = markerFor(a);
      m.style.left = ((ci + 0.5) * cw) + "px";
      m.style.height = (h.layers.length * ROW) + "px";
      plot.appendChild(m);
    });
    holder.appendChild(el("div", {cls: "heatmap"}, labels, plot));
    var notes = panel.querySelector(".notes");
    notes.innerHTML = "";
    notes.appendChild(el("p", {cls: "legend-scale", text: "steps " + h.steps[0] + "–" +
      h.steps[h.steps.length - 1] + "; colour " + (logScale ? "log10 " : "") + "scale " +
      fmt(logScale ? Math.pow(10, lo) : lo) + " (dark) … " + fmt(logScale ? Math.pow(10, hi) : hi) +
      " (yellow); grey = no value (missing or non-finite)"}));
  }

  function simplePanel(container, key, title, xs, lines, axisLabel, alerts, opts) {
    opts = opts || {};
    var panel = panelFor(container, key, title);
    var info = spansDecades(lines.map(function (l) { return l.values; }));
    var log = opts.fixed ? false : logToggle(panel, key, info);
    var data = [xs], series = [{label: opts.x || "step"}], idx = [];
    lines.forEach(function (ln, i) {
      data.push(opts.fixed ? ln.values : ema(ln.values, smoothing));
      series.push({label: ln.label, stroke: ln.stroke || COLORS[i % COLORS.length], width: ln.width || 1.5});
      idx.push(data.length - 1);
    });
    var y = opts.fixed ? {range: opts.fixed} : {range: fittedRange(idx, log)};
    if (log) { y.distr = 3; y.log = 10; }
    upsertChart(key, panel, panel.querySelector(".chart"), {
      height: opts.height || 200, series: series, scales: {x: {time: false}, y: y},
      axes: [{label: opts.x || "step"}, {label: axisLabel + (log ? " (log)" : ""), size: 64, labelSize: 18}]
    }, data, {alerts: alerts || []});
    labelChart(key, title + " by " + (opts.x || "step") + (xs.length ? ", " + xs[0] + " to " + xs[xs.length - 1] : "") +
      "; " + (alerts || []).length + " alerts");
    return panel;
  }

  function resourcePanel(container, r) {
    var lines = r.lines.map(function (ln, i) {
      var out = r.outliers.indexOf(ln.label) >= 0;
      return {label: ln.label + (out ? " ⚠ stands out" : ""), values: ln.values,
              stroke: out ? "#d0312d" : COLORS[i % COLORS.length], width: out ? 2.5 : 1.2};
    });
    var alerts = lastView.alerts.filter(function (a) { return a.panel === "res-" + r.metric; });
    var panel = simplePanel(container, "res-" + r.metric, r.metric + " per node and rank", r.steps,
                            lines, r.metric, alerts);
    var notes = panel.querySelector(".notes");
    notes.innerHTML = "";
    if (r.outliers.length) {
      notes.appendChild(el("p", {cls: "note outlier", text: "stands out: " + r.outliers.map(function (l) {
        var ln = r.lines.filter(function (x) { return x.label === l; })[0];
        return l + " (median " + fmt(ln.median) + ")";
      }).join(", ") + " vs the other ranks"}));
    }
  }

  function inferencePanels(container, inf) {
    inf.panels.forEach(function (g) {
      var alerts = g.alert_ids.map(function (id) { return alertsById[id]; }).filter(Boolean);
      var lines = Object.keys(g.series).map(function (n) { return {label: n, values: g.series[n]}; });
      var panel = simplePanel(container, "infer-" + g.key, "inference: " + g.title + " (per 20 requests)",
                              g.steps, lines, g.unit, alerts, {x: "request"});
      var notes = panel.querySelector(".notes");
      notes.innerHTML = "";
      var l = alertList(alerts);
      if (l) notes.appendChild(l);
    });
    var dn = Object.keys(inf.drift.series);
    if (dn.length) {
      var lines = dn.map(function (n, i) {
        return {label: n, values: inf.drift.series[n], stroke: SCORE_COLORS[i % SCORE_COLORS.length], width: 1.2};
      });
      var panel = simplePanel(container, "infer-drift", "inference: anomaly scores", inf.drift.steps, lines,
                              "anomaly score 0–1", [], {x: "request", fixed: [0, 1], height: 180});
      var notes = panel.querySelector(".notes");
      notes.innerHTML = "";
      notes.appendChild(el("p", {cls: "note", text: "one 0..1 scale for all detectors: 0 = normal, 1 = most anomalous"}));
    }
  }

  // -- run view ----------------------------------------------------------------------------

  function section(root, id, title) {
    var s = document.getElementById(id);
    if (!s) {
      s = el("div", {id: id}, el("h3", {cls: "group-title", text: title}), el("div", {cls: "body"}));
      root.appendChild(s);
    }
    return s.querySelector(".body");
  }

  function emptyNote(body, text) {
    if (!body.querySelector(".panel, .empty")) body.appendChild(el("p", {cls: "muted empty", text: text}));
  }

  function summaryTable(view) {
    var s = view.summary;
    var t = el("table", {id: "summary-table"});
    var sev = Object.keys(s.alerts).map(function (k) { return s.alerts[k] + " " + k; }).join(", ");
    [["steps", (s.first_step == null ? "–" : s.first_step + "–" + s.last_step)],
     ["duration", duration(s.duration_s)], ["events", s.events],
     ["start", s.start_ts ? new Date(s.start_ts * 1000).toISOString().replace(".000", "") : "–"],
     ["incidents", (sev || "none") + (view.alerts.length ? " (" + view.open_alerts + " open)" : "")],
     ["events with non-finite values", s.nonfinite_events]]
      .forEach(function (r) { t.appendChild(el("tr", null, el("th", {text: r[0], scope: "row"}), el("td", {text: String(r[1])}))); });
    var m = el("table", {id: "metrics-table"},
      el("tr", null, el("th", {text: "metric"}), el("th", {text: "rank"}), el("th", {text: "final"}),
         el("th", {text: "best"}), el("th", {text: "best at step"})));
    s.metrics.forEach(function (r) {
      var bad = typeof r.final === "string";
      m.appendChild(el("tr", {"data-metric": r.metric}, el("td", {text: r.metric + (r.kind === "eval" ? " (eval)" : "")}),
        el("td", {text: r.rank}), el("td", {cls: "num final" + (bad ? " nonfinite" : ""),
          text: fmt(r.final) + (bad ? " (step " + r.final_step + ")" : "")}),
        el("td", {cls: "num", text: r.goal ? fmt(r.best) + " (" + r.goal + ")" : "–"}),
        el("td", {cls: "num", text: r.best_step == null ? "–" : String(r.best_step)})));
    });
    if (!s.metrics.length) m = el("p", {cls: "muted", text: "No training or eval metrics."});
    return el("div", {cls: "summary"}, t, m);
  }

  function chartLink(a, text) {
    if (!a.panel) return null;
    var link = el("a", {cls: "chart-link", href: REPORT ? "#" : hashFor({run: current, panel: a.panel, step: a.step}),
                        text: text});
    link.onclick = function (ev) {
      ev.preventDefault();
      if (!REPORT) history.replaceState(null, "", hashFor({run: current, panel: a.panel, step: a.step}));
      focusChart(a.panel, a.step, a.id);
    };
    return link;
  }

  function focusChart(panelKey, step, id) {  // zoom the panel around the step, scroll, focus its marker
    var c = charts[panelKey];
    if (c && step != null) {
      var xs = c.u.data[0], span = Math.max(20, Math.round((xs[xs.length - 1] - xs[0]) * 0.1));
      zooms[panelKey] = {min: Math.max(xs[0], +step - span), max: Math.min(xs[xs.length - 1], +step + span)};
      c.internal = true;
      c.u.setScale("x", zooms[panelKey]);
      c.internal = false;
      var rb = c.u.root.closest(".panel").querySelector("button.reset-zoom");
      if (rb) rb.hidden = false;
    }
    var p = document.querySelector('.panel[data-panel="' + CSS.escape(panelKey) + '"]');
    if (!p) return;
    p.scrollIntoView({block: "center"});
    var m = id && p.querySelector('.alert-marker[data-id="' + CSS.escape(id) + '"]');
    (m || p).focus && (m || p).focus();
  }

  function problemBox(view) {
    var a = view.problem;
    var box = el("section", {id: "problem", "aria-label": "the run's worst open incident"});
    if (!a) {
      box.className = "calm";
      var n = view.alerts.length;
      box.appendChild(el("p", null, badge(view.health),
        n ? " No open incidents; " + n + " resolved (see the incidents below)." : " No alerts in this run."));
      return box;
    }
    box.className = a.severity;
    box.setAttribute("data-id", a.id);
    box.appendChild(el("h3", null, badge(a.severity, " · " + a.status + (a.ended ? " (run ended)" : "")),
      " " + a.metric + (a.rank && a.rank !== "0" ? " (rank " + a.rank + ")" : "") + " at step " + a.step +
      (a.last_step != null && a.last_step !== a.step ? "–" + a.last_step : "")));
    box.appendChild(el("div", {cls: "message"}, el("b", {text: "Alert: "}), a.message || ""));
    box.appendChild(el("div", {cls: "explanation"}, el("b", {text: "What it means: "}), a.explanation || ""));
    if (a.cause) box.appendChild(el("div", {cls: "cause"}, el("b", {text: "Likely cause: "}), a.cause));
    if (a.action) box.appendChild(el("div", {cls: "action"}, el("b", {text: "Next step: "}), a.action));
    var more = view.open_alerts > 1 ? " · " + (view.open_alerts - 1) + " more open incident" +
      (view.open_alerts > 2 ? "s" : "") + " below" : "";
    box.appendChild(el("p", null, chartLink(a, "show " + a.metric + " at step " + a.step + " on its chart"),
                       el("span", {cls: "muted", text: " " + a.detector + " detector, score " + fmt(a.score) + more})));
    return box;
  }

  function alertsTable(view) {
    if (!view.alerts.length) return el("p", {cls: "muted", text: "No alerts for this run."});
    var t = el("table", {id: "alerts-table"}, el("tr", null, el("th", {text: "step"}),
      el("th", {text: "severity"}), el("th", {text: "status"}), el("th", {text: "metric"}),
      el("th", {text: "rank"}), el("th", {text: "detector"}), el("th", {text: "alert and explanation"})));
    var order = view.alerts.slice().sort(function (a, b) {
      return (a.status === "open" ? 0 : 1) - (b.status === "open" ? 0 : 1) || (a.step || 0) - (b.step || 0);
    });
    order.forEach(function (a) {
      var ex = el("td", null, el("div", {cls: "message", text: a.message || ""}),
                  el("div", {cls: "explanation", text: a.explanation}));
      if (a.status === "open" && a.cause) ex.appendChild(el("div", null, el("b", {text: "cause: "}), a.cause));
      if (a.status === "open" && a.action) ex.appendChild(el("div", null, el("b", {text: "next step: "}), a.action));
      var link = chartLink(a, "chart");
      if (link) ex.appendChild(el("div", null, link));
      var tr = el("tr", {"data-id": a.id, tabindex: "0", cls: "alert-row " + a.status},
        el("td", {cls: "num", text: String(a.step)}), el("td", null, badge(a.severity)),
        el("td", {text: a.status + (a.ended ? " (run ended)" : "")}),
        el("td", {text: a.metric}), el("td", {text: String(a.rank)}), el("td", {text: a.detector}), ex);
      tr.onclick = function (ev) { if (ev.target.tagName !== "A") showAlert(a, tr); };
      tr.onkeydown = function (ev) { if (ev.key === "Enter" && ev.target === tr) showAlert(a, tr); };
      t.appendChild(tr);
    });
    return t;
  }

  function toolbar(root) {
    var bar = document.getElementById("toolbar");
    if (bar) return;
    var slider = el("input", {type: "range", min: "0", max: "0.99", step: "0.01", value: String(smoothing),
                              id: "smoothing", "aria-label": "smoothing (exponential moving average weight)"});
    var out = el("output", {"for": "smoothing", text: String(smoothing)});
    slider.oninput = function () {
      smoothing = +slider.value;
      out.textContent = slider.value;
      if (lastView) renderRun(lastView);
    };
    var reset = el("button", {type: "button", id: "reset-all", text: "reset all zoom"});
    reset.onclick = function () { Object.keys(charts).forEach(resetZoom); };
    bar = el("div", {id: "toolbar"}, el("label", null, "smoothing (EMA) ", slider, " ", out), " ", reset,
             el("span", {cls: "muted", text: " drag on a chart to zoom; hover for values (cursor synced across panels)"}));
    root.appendChild(bar);
  }

  function focusKey() {  // what has the keyboard focus, to find it again after a re-render
    var e = document.activeElement;
    if (!e || e === document.body || !document.getElementById("run").contains(e)) return null;
    var panel = e.closest(".panel, #problem, #group-alerts");
    return {scope: panel ? (panel.getAttribute("data-panel") || panel.id) : null,
            sel: e.tagName.toLowerCase() + (e.getAttribute("data-id") ? '[data-id="' +
                 CSS.escape(e.getAttribute("data-id")) + '"]' : "") +
                 (e.classList.length ? "." + Array.prototype.map.call(e.classList, CSS.escape).join(".") : ""),
            node: e};
  }

  function restoreFocus(k) {
    if (!k || document.contains(k.node)) return;
    var scope = k.scope && (document.querySelector('.panel[data-panel="' + CSS.escape(k.scope) + '"]') ||
                            document.getElementById(k.scope));
    var e = (scope || document).querySelector(k.sel);
    if (e) e.focus({preventScroll: true});
  }

  var known = null;  // incident ids already on the page (for the live announcement)
  function announce(view) {  // screen readers hear new open incidents (a polite live region)
    var box = document.getElementById("announce");
    if (!box) return;
    if (!known || known.run !== view.run) { known = {run: view.run, ids: {}}; }
    var fresh = view.alerts.filter(function (a) { return a.status === "open" && !known.ids[a.id]; });
    var first = Object.keys(known.ids).length === 0 && !known.loaded;
    view.alerts.forEach(function (a) { known.ids[a.id] = true; });
    known.loaded = true;
    if (first || !fresh.length) return;
    box.textContent = fresh.map(function (a) {
      return "new " + a.severity + " alert on " + view.run + ": " + a.message;
    }).join(". ");
  }

  function renderRun(view) {
    var fk = focusKey();
    draw(view);
    restoreFocus(fk);
    if (!REPORT) announce(view);
  }

  function draw(view) {
    var root = document.getElementById("run");
    if (!lastView || lastView.run !== view.run || !document.getElementById("run-head")) {
      Object.keys(charts).forEach(function (k) { charts[k].u.destroy(); });
      charts = {};
      zooms = {};
      root.innerHTML = "";
    }
    lastView = view;
    alertsById = {};
    view.alerts.forEach(function (a) { alertsById[a.id] = a; });
    // findings that joined an incident: a marker on their own panel, keyed id@metric@rank
    Object.keys(view.markers || {}).forEach(function (k) { alertsById[k] = view.markers[k]; });
    document.title = view.run + " · " + view.health + (view.open_alerts ? " (" + view.open_alerts + " open)" : "") +
      " · Telltale" + (REPORT ? " report" : "");
    var head = document.getElementById("run-head");
    if (!head) { head = el("div", {id: "run-head"}); root.appendChild(head); }
    head.innerHTML = "";
    head.appendChild(el("h2", null, view.run + " ",
      REPORT ? null : el("span", {cls: "badge " + view.status, text: view.status}), " ", badge(view.health)));
    head.appendChild(problemBox(view));
    var al = section(root, "group-alerts", "Incidents (open first)");
    al.innerHTML = "";
    al.appendChild(alertsTable(view));
    var sm = section(root, "group-summary", "Summary");
    sm.innerHTML = "";
    sm.appendChild(summaryTable(view));
    toolbar(section(root, "group-controls", "Charts"));

    var tr = section(root, "group-training", "Training metrics");
    view.training.forEach(function (p) { trainingPanel(tr, view, p); });
    emptyNote(tr, "No training metrics in this run.");
    var ins = section(root, "group-internals", "Model internals");
    ins.classList.add("grid");
    view.internals.forEach(function (h) { heatmapPanel(ins, h); });
    emptyNote(ins, "No model internals in this run (log them with watch(model)).");
    var res = section(root, "group-resources", "Resources per node and rank");
    res.classList.add("grid");
    view.resources.forEach(function (r) { resourcePanel(res, r); });
    emptyNote(res, "No system or timing metrics in this run.");
    var inf = section(root, "group-inference", "Inference");
    if (view.inference) inferencePanels(inf, view.inference);
    emptyNote(inf, "No inference metrics in this run.");
  }

  // -- compare runs ------------------------------------------------------------------------

  function renderCompare(runs, metric, views) {
    var root = document.getElementById("run");
    if (lastView || !document.getElementById("compare")) {
      Object.keys(charts).forEach(function (k) { charts[k].u.destroy(); });
      charts = {};
      root.innerHTML = "";
      lastView = null;
      root.appendChild(el("div", {id: "compare"}));
    }
    var box = document.getElementById("compare");
    var metrics = [];
    views.forEach(function (v) { v.training.forEach(function (p) {
      if (metrics.indexOf(p.metric) < 0) metrics.push(p.metric);
    }); });
    metric = metric && metrics.indexOf(metric) >= 0 ? metric : metrics[0];
    document.title = "compare " + runs.join(", ") + " · Telltale";
    var head = document.getElementById("compare-head");
    if (!head) {
      head = el("div", {id: "compare-head"});
      box.appendChild(head);
    }
    head.innerHTML = "";
    var sel = el("select", {id: "compare-metric", "aria-label": "metric to compare"});
    metrics.forEach(function (m) { sel.appendChild(el("option", {value: m, text: m})); });
    sel.value = metric;
    sel.onchange = function () { location.hash = hashFor({compare: runs.join(","), metric: sel.value}); };
    head.appendChild(el("h2", null, "Compare " + runs.length + " runs"));
    head.appendChild(el("p", null, el("label", null, "metric ", sel),
      el("span", {cls: "muted", text: " aligned by step; the URL keeps this selection"})));
    var body = document.getElementById("compare-body");
    if (!body) { body = el("div", {id: "compare-body"}); box.appendChild(body); }
    if (!metric) { body.textContent = "These runs have no training metrics in common."; return; }
    var steps = {}, per = [];
    views.forEach(function (v) {
      var p = v.training.filter(function (q) { return q.metric === metric; })[0];
      var m = {};
      if (p) p.steps.forEach(function (s, i) { m[s] = p.lines[0].values[i]; steps[s] = true; });
      per.push(m);
    });
    var xs = Object.keys(steps).map(Number).sort(function (a, b) { return a - b; });
    var lines = views.map(function (v, i) {
      return {label: v.run, values: xs.map(function (s) { return per[i][s] == null ? null : per[i][s]; })};
    });
    var alerts = [];
    views.forEach(function (v) { v.alerts.forEach(function (a) {
      if (a.metric === metric) { alerts.push(a); alertsById[a.id] = a; }
    }); });
    simplePanel(body, "compare-" + metric, metric + ": " + runs.join(" vs "), xs, lines, metric, alerts);
    window.TELLTALE_COMPARED = runs.slice();
  }

  // -- live page ---------------------------------------------------------------------------

  function compareSelection() {
    return Array.prototype.slice.call(document.querySelectorAll("input.compare-box:checked"))
      .map(function (b) { return b.getAttribute("data-run"); });
  }

  function renderRuns(doc) {  // rows are updated in place (and re-ordered: worst health first)
    document.getElementById("source").textContent = "data: " + doc.source;
    var nav = document.getElementById("runs");
    var t = document.getElementById("runs-table");
    if (!doc.runs.length) {
      nav.innerHTML = "";
      nav.appendChild(el("p", {cls: "muted", text: "No runs yet. Start a run, or 'telltale demo'."}));
      return;
    }
    if (!t) {
      nav.innerHTML = "";
      var cmp = el("button", {type: "button", id: "compare-button", text: "compare selected"});
      cmp.onclick = function () {
        var sel = compareSelection();
        if (sel.length >= 2) location.hash = hashFor({compare: sel.join(",")});
      };
      t = el("table", {id: "runs-table"}, el("caption", {text: "Runs, worst first"}),
        el("tr", null, el("th", {text: "cmp", title: "select runs to compare"}), el("th", {text: "run"}),
        el("th", {text: "status"}), el("th", {text: "last step"}), el("th", {text: "incidents"})));
      nav.appendChild(t);
      nav.appendChild(el("p", null, cmp, el("span", {cls: "muted", text: " tick two or more runs"})));
    }
    var h = readHash(), picked = h.compare ? h.compare.split(",") : [];
    var seen = {};
    doc.runs.forEach(function (r) {
      seen[r.run] = true;
      var row = t.querySelector('tr.run-row[data-run="' + CSS.escape(r.run) + '"]');
      if (!row) {
        var box = el("input", {type: "checkbox", cls: "compare-box", "data-run": r.run,
                               "aria-label": "compare " + r.run});
        box.checked = picked.indexOf(r.run) >= 0;
        var link = el("a", {cls: "run-link", href: "#" + encodeURIComponent(r.run), "data-run": r.run, text: r.run});
        row = el("tr", {cls: "run-row", "data-run": r.run}, el("td", null, box), el("td", null, link), el("td"),
                 el("td", {cls: "num"}), el("td", {cls: "num"}));
        row.onclick = function (ev) {
          if (ev.target.tagName === "INPUT" || ev.target.tagName === "A") return;
          location.hash = encodeURIComponent(r.run);
        };
      }
      t.appendChild(row);  // moves it: the API's order (worst health first)
      row.classList.toggle("selected", r.run === current);
      if (r.run === current) row.querySelector("a").setAttribute("aria-current", "page");
      else row.querySelector("a").removeAttribute("aria-current");
      var st = row.cells[2];
      st.innerHTML = "";
      st.appendChild(el("span", {cls: "badge " + r.status, text: r.status}));
      st.appendChild(document.createTextNode(" "));
      st.appendChild(badge(r.health));
      row.cells[3].textContent = String(r.last_step);
      row.cells[4].textContent = r.alerts ? r.open_alerts + " open / " + r.alerts : "0";
      row.cells[4].title = Object.keys(r.by_severity || {}).map(function (k) { return r.by_severity[k] + " " + k; }).join(", ");
    });
    Array.prototype.slice.call(t.querySelectorAll("tr.run-row")).forEach(function (row) {
      if (!seen[row.getAttribute("data-run")]) row.remove();
    });
    var hh = readHash();
    if (!current && !hh.compare) select(doc.runs[0].run);
  }

  function select(run) {
    if (run === current) return;
    current = run;
    compareRuns = null;
    Array.prototype.forEach.call(document.querySelectorAll("tr.run-row"), function (r) {
      r.classList.toggle("selected", r.getAttribute("data-run") === run);
    });
    pollRun();
  }

  var runTimer = null, compareRuns = null, compareMetric = null, pending = false, again = false;
  function pollRun() {
    clearTimeout(runTimer);
    if (pending) { again = true; return; }
    if (compareRuns) return pollCompare();
    if (!current) return;
    var run = current;
    pending = true;
    getJSON(apiRun(run)).then(function (view) {
      var sig = JSON.stringify(view);
      if (run === current && !compareRuns && (sig !== lastSig || !lastView || lastView.run !== run)) {
        lastSig = sig;
        renderRun(view);
        var h = readHash();
        if (h.panel && h.run === run && focusedFor !== location.hash) {
          focusedFor = location.hash;
          focusChart(h.panel, h.step, null);
        }
      }
      showError(null);
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    }).catch(function (e) { showError(String(e.message || e)); })
      .then(function () {
        pending = false;
        if (again) { again = false; pollRun(); } else runTimer = setTimeout(pollRun, RUN_MS);
      });
  }
  var focusedFor = null, lastSig = null;

  function pollCompare() {
    var runs = compareRuns;
    pending = true;
    Promise.all(runs.map(function (r) { return getJSON(apiRun(r)); })).then(function (views) {
      if (compareRuns === runs) renderCompare(runs, compareMetric, views);
      showError(null);
    }).catch(function (e) { showError(String(e.message || e)); })
      .then(function () {
        pending = false;
        if (again) { again = false; pollRun(); } else runTimer = setTimeout(pollRun, RUN_MS);
      });
  }

  var runsTimer = null;
  function pollRuns() {
    clearTimeout(runsTimer);
    getJSON("api/runs").then(renderRuns).catch(function (e) { showError(String(e.message || e)); })
      .then(function () { runsTimer = setTimeout(pollRuns, RUNS_MS); });
  }

  var alertCounts = null;
  function pollAlerts() {  // cheap: one count per run; the list and the run follow a change
    getJSON("api/runs?only=alerts").then(function (doc) {
      var counts = doc.alerts || {};
      if (!doc.alerts && doc.runs) doc.runs.forEach(function (r) { counts[r.run] = r.alert_records; });
      var prev = alertCounts || counts;
      function differs(r) { return (prev[r] || 0) !== (counts[r] || 0); }
      var changed = Object.keys(counts).some(differs);
      var mine = !!current && differs(current);
      alertCounts = counts;
      if (mine || (compareRuns && changed)) pollRun();
      if (changed) pollRuns();
    }).catch(function () { /* the slower polls report errors */ })
      .then(function () { setTimeout(pollAlerts, ALERTS_MS); });
  }

  function fromHash() {
    var h = readHash();
    if (h.compare) {
      var runs = h.compare.split(",").filter(Boolean);
      current = null;
      compareRuns = runs;
      compareMetric = h.metric || null;
      Array.prototype.forEach.call(document.querySelectorAll("input.compare-box"), function (b) {
        b.checked = runs.indexOf(b.getAttribute("data-run")) >= 0;
      });
      pollRun();
      return;
    }
    compareRuns = null;
    if (h.run) {
      if (h.run === current) { focusedFor = null; pollRun(); }
      else select(h.run);
    }
  }

  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (k) {
      var c = charts[k], panel = c.u.root.closest(".panel");
      if (panel) c.u.setSize({width: chartWidth(panel), height: c.u.height});
    });
  });

  if (REPORT) {
    document.body.classList.add("report");
    renderRun(REPORT);
    window.TELLTALE_RENDERED = true;
  } else {
    window.addEventListener("hashchange", fromHash);
    fromHash();
    pollRuns();
    pollAlerts();
  }
})();
