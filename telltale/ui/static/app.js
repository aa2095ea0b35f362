/* Telltale dashboard: the live page (polls the JSON API) and static reports (data embedded
   as window.TELLTALE_REPORT) share this renderer. Charts: uPlot (vendored, MIT). */
(function () {
  "use strict";

  var REPORT = window.TELLTALE_REPORT || null;
  var POLL_MS = 2000;
  var COLORS = ["#3b6fd8", "#e07b00", "#2e8b57", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d",
                "#d35400", "#2c3e50", "#b7950b"];
  var SCORE_COLORS = ["#c0392b", "#8e44ad", "#16a085", "#d35400"];
  var charts = {};          // panel key -> {u, sig, alerts}
  var alertsById = {};
  var current = null;       // selected run id
  var lastView = null;

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

  // -- alert details -------------------------------------------------------------------

  function showAlert(a) {
    var box = document.getElementById("alert-detail");
    box.innerHTML = "";
    var close = el("button", {type: "button", text: "×", title: "close"});
    close.onclick = function () { box.hidden = true; };
    box.appendChild(close);
    box.appendChild(el("h4", null, el("span", {cls: "badge " + a.severity, text: a.severity}),
      " " + a.metric + " at step " + a.step + (a.rank && a.rank !== "0" ? " (rank " + a.rank + ")" : "")));
    box.appendChild(el("div", {cls: "explanation", text: a.explanation || a.message}));
    if (a.cause) box.appendChild(el("div", null, el("b", {text: "Likely cause: "}), a.cause));
    if (a.action) box.appendChild(el("div", null, el("b", {text: "Next step: "}), a.action));
    if (a.contributors && a.contributors.length) {
      box.appendChild(el("div", null, el("b", {text: "Contributors: "}), a.contributors.join(", ")));
    }
    if (a.last_step != null && a.last_step !== a.step) {
      box.appendChild(el("div", {cls: "muted", text: "steps " + a.step + "–" + a.last_step}));
    }
    box.appendChild(el("div", {cls: "muted",
      text: a.detector + " detector, score " + fmt(a.score) + (a.state ? ", " + a.state : "") +
            ", id " + a.id}));
    box.hidden = false;
  }

  function markersPlugin(getAlerts) {
    function place(u) {  // markers persist across redraws: moved and updated, not rebuilt
      var over = u.over, keep = {};
      getAlerts().forEach(function (a) {
        if (a.step == null) return;
        var x = u.valToPos(a.step, "x");
        if (!(x >= 0 && x <= over.clientWidth + 1)) return;
        var key = a.id + "@" + a.metric;
        keep[key] = true;
        var m = over.querySelector('.alert-marker[data-key="' + CSS.escape(key) + '"]');
        if (!m) {
          m = el("div", {"data-key": key, "data-id": a.id});
          over.appendChild(m);
        }
        m.className = "alert-marker " + a.severity;
        m.setAttribute("data-step", a.step);
        m.setAttribute("data-metric", a.metric);
        m.title = a.explanation || a.message;
        m.style.left = x + "px";
        m.onclick = function (ev) { ev.stopPropagation(); showAlert(a); };
      });
      Array.prototype.slice.call(over.querySelectorAll(".alert-marker")).forEach(function (m) {
        if (!keep[m.getAttribute("data-key")]) m.remove();
      });
    }
    return {hooks: {draw: [place]}};
  }

  // -- charts ----------------------------------------------------------------------------

  function chartWidth(panel) {
    return Math.max(320, (panel.clientWidth || 600) - 24);
  }

  function upsertChart(key, panel, holder, opts, data, alerts) {
    if (!opts.legend) opts.legend = {live: false};
    var sig = opts.series.map(function (s) { return s.label || ""; }).join("|");
    var c = charts[key];
    if (c && c.sig === sig && holder.contains(c.u.root)) {
      c.alerts = alerts || [];
      c.u.setData(data);
      return c.u;
    }
    if (c) c.u.destroy();
    holder.innerHTML = "";
    var entry = {sig: sig, alerts: alerts || []};
    opts.width = chartWidth(panel);
    opts.plugins = [markersPlugin(function () { return entry.alerts; })];
    entry.u = new uPlot(opts, data, holder);
    charts[key] = entry;
    return entry.u;
  }

  function panelFor(container, key, title) {
    var id = "panel-" + key.replace(/[^A-Za-z0-9_-]/g, "_");
    var p = document.getElementById(id);
    if (!p) {
      p = el("section", {cls: "panel", id: id, "data-panel": key},
             el("h3", {text: title}), el("div", {cls: "chart"}), el("div", {cls: "notes"}));
      container.appendChild(p);
    }
    return p;
  }

  function alertList(alerts) {
    if (!alerts.length) return null;
    var ul = el("ul", {cls: "panel-alerts"});
    alerts.slice(0, 8).forEach(function (a) {
      var li = el("li", null, el("span", {cls: "badge " + a.severity, text: a.severity}),
                  " step " + a.step + ": ", el("span", {cls: "explanation", text: a.explanation}));
      li.style.cursor = "pointer";
      li.onclick = function () { showAlert(a); };
      ul.appendChild(li);
    });
    if (alerts.length > 8) ul.appendChild(el("li", {cls: "muted",
      text: "… " + (alerts.length - 8) + " more in the alerts table"}));
    return ul;
  }

  function trainingPanel(container, view, p) {
    var key = "train-" + p.metric;
    var panel = panelFor(container, key, p.metric + (p.kind === "eval" ? " (eval)" : ""));
    var data = [p.steps], series = [{label: "step"}];
    p.lines.forEach(function (ln, i) {
      data.push(ln.values);
      series.push({label: ln.label, stroke: COLORS[i % COLORS.length], width: 1.5,
                   scale: "y", spanGaps: false});
    });
    var bands = [];
    if (p.band) {
      var k = view.k;
      data.push(p.band.hi, p.band.lo, p.band.mean);
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
    var axes = [{label: "step"}, {scale: "y", label: p.metric}];
    if (dets.length) axes.push({scale: "score", side: 1, label: "score", grid: {show: false}});
    var alerts = p.alert_ids.map(function (id) { return alertsById[id]; }).filter(Boolean);
    upsertChart(key, panel, panel.querySelector(".chart"), {
      height: 240, series: series, bands: bands, axes: axes,
      scales: {x: {time: false}}, legend: {live: false}
    }, data, alerts);
    var notes = panel.querySelector(".notes");
    notes.innerHTML = "";
    notes.appendChild(el("p", {cls: "note", text: (p.band ? "band: mean ± " + view.k +
      "·std of the last closed window before each step (rank " + p.focus_rank + "); " : "") +
      (dets.length ? "dashed: anomaly scores (" + dets.join(", ") + ", right axis)" : "")}));
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
    var cv = el("canvas", {width: width, height: h.layers.length * ROW});
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
    var axis = el("div", {cls: "heatmap-axis"});
    axis.style.width = width + "px";
    var nt = Math.min(6, h.steps.length);
    for (var t = 0; t < nt; t++) {
      var ci = Math.round(t * (h.steps.length - 1) / Math.max(1, nt - 1));
      var tick = el("span", {text: String(h.steps[ci])});
      tick.style.left = ((ci + 0.5) * cw) + "px";
      axis.appendChild(tick);
    }
    plot.appendChild(axis);
    // alerts on this family's layers: markers at their step
    lastView.alerts.filter(function (a) {
      return a.metric && a.metric.indexOf(h.family + "/") === 0;
    }).forEach(function (a) {
      var ci = 0;
      while (ci < h.steps.length - 1 && h.steps[ci] < a.step) ci++;
      var m = el("div", {cls: "alert-marker " + a.severity, "data-step": a.step,
                         "data-metric": a.metric, "data-id": a.id,
                         title: a.explanation || a.message});
      m.style.left = ((ci + 0.5) * cw) + "px";
      m.style.height = (h.layers.length * ROW) + "px";
      m.onclick = function (ev) { ev.stopPropagation(); showAlert(a); };
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

  function resourcePanel(container, r) {
    var key = "res-" + r.metric;
    var panel = panelFor(container, key, r.metric + " per node and rank");
    var data = [r.steps], series = [{label: "step"}];
    r.lines.forEach(function (ln, i) {
      var out = r.outliers.indexOf(ln.label) >= 0;
      data.push(ln.values);
      series.push({label: ln.label + (out ? " ⚠" : ""), stroke: out ? "#d0312d" : COLORS[i % COLORS.length],
                   width: out ? 2.5 : 1.2});
    });
    upsertChart(key, panel, panel.querySelector(".chart"), {
      height: 200, series: series, scales: {x: {time: false}},
      axes: [{label: "step"}, {label: r.metric}]
    }, data, []);
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
    var alerts = inf.alert_ids.map(function (id) { return alertsById[id]; }).filter(Boolean);
    var groups = [["latency", ["latency p50 ms", "latency p99 ms", "ttft p50 ms"]],
                  ["error rate", ["error rate"]], ["tokens/s", ["tokens/s"]]];
    groups.forEach(function (g, gi) {
      var names = g[1].filter(function (n) { return inf.series[n]; });
      if (!names.length) return;
      var key = "infer-" + g[0];
      var panel = panelFor(container, key, "inference: " + g[0] + " (per " + 20 + " requests)");
      var data = [inf.steps], series = [{label: "request"}];
      names.forEach(function (n, i) {
        data.push(inf.series[n]);
        series.push({label: n, stroke: COLORS[i % COLORS.length], width: 1.5});
      });
      upsertChart(key, panel, panel.querySelector(".chart"), {
        height: 200, series: series, scales: {x: {time: false}},
        axes: [{label: "request"}, {label: g[0]}]
      }, data, gi === 0 ? alerts : []);
      var notes = panel.querySelector(".notes");
      notes.innerHTML = "";
      if (gi === 0) { var l = alertList(alerts); if (l) notes.appendChild(l); }
    });
    var dn = Object.keys(inf.drift.series);
    if (dn.length) {
      var panel = panelFor(container, "infer-drift", "inference: drift scores (clipped to ±50)");
      var data = [inf.drift.steps], series = [{label: "request"}];
      dn.forEach(function (n, i) {
        data.push(inf.drift.series[n]);
        series.push({label: n, stroke: SCORE_COLORS[i % SCORE_COLORS.length], width: 1.2});
      });
      upsertChart("infer-drift", panel, panel.querySelector(".chart"), {
        height: 180, series: series, scales: {x: {time: false}},
        axes: [{label: "request"}, {label: "score"}]
      }, data, alerts);
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
     ["alerts", sev || "none"], ["events with non-finite values", s.nonfinite_events]]
      .forEach(function (r) { t.appendChild(el("tr", null, el("th", {text: r[0]}), el("td", {text: String(r[1])}))); });
    var m = el("table", {id: "metrics-table"},
      el("tr", null, el("th", {text: "metric"}), el("th", {text: "rank"}), el("th", {text: "final"}),
         el("th", {text: "best"}), el("th", {text: "best at step"})));
    s.metrics.forEach(function (r) {
      m.appendChild(el("tr", null, el("td", {text: r.metric + (r.kind === "eval" ? " (eval)" : "")}),
        el("td", {text: r.rank}), el("td", {cls: "num", text: fmt(r.final)}),
        el("td", {cls: "num", text: r.goal ? fmt(r.best) + " (" + r.goal + ")" : "–"}),
        el("td", {cls: "num", text: r.best_step == null ? "–" : String(r.best_step)})));
    });
    if (!s.metrics.length) m = el("p", {cls: "muted", text: "No training or eval metrics."});
    return el("div", {cls: "summary"}, t, m);
  }

  function alertsTable(view) {
    if (!view.alerts.length) return el("p", {cls: "muted", text: "No alerts for this run."});
    var t = el("table", {id: "alerts-table"}, el("tr", null, el("th", {text: "step"}),
      el("th", {text: "severity"}), el("th", {text: "metric"}), el("th", {text: "rank"}),
      el("th", {text: "detector"}), el("th", {text: "explanation"})));
    view.alerts.forEach(function (a) {
      var ex = el("td", null, el("div", {cls: "explanation", text: a.explanation}));
      if (a.cause) ex.appendChild(el("div", null, el("b", {text: "cause: "}), a.cause));
      if (a.action) ex.appendChild(el("div", null, el("b", {text: "action: "}), a.action));
      var tr = el("tr", {"data-id": a.id}, el("td", {cls: "num", text: String(a.step)}),
        el("td", null, el("span", {cls: "badge " + a.severity, text: a.severity + (a.state ? " · " + a.state : "")})),
        el("td", {text: a.metric}), el("td", {text: String(a.rank)}), el("td", {text: a.detector}), ex);
      t.appendChild(tr);
    });
    return t;
  }

  function renderRun(view) {
    var root = document.getElementById("run");
    if (!lastView || lastView.run !== view.run) {
      Object.keys(charts).forEach(function (k) { charts[k].u.destroy(); });
      charts = {};
      root.innerHTML = "";
    }
    lastView = view;
    alertsById = {};
    view.alerts.forEach(function (a) { alertsById[a.id] = a; });
    var head = document.getElementById("run-head");
    if (!head) { head = el("div", {id: "run-head"}); root.appendChild(head); }
    head.innerHTML = "";
    head.appendChild(el("h2", null, view.run + " ",
      REPORT ? null : el("span", {cls: "badge " + view.status, text: view.status})));
    head.appendChild(summaryTable(view));

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
    var al = section(root, "group-alerts", "Alerts");
    al.innerHTML = "";
    al.appendChild(alertsTable(view));
  }

  // -- live page ---------------------------------------------------------------------------

  function renderRuns(doc) {  // rows are updated in place, so a click never hits a stale row
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
      t = el("table", {id: "runs-table"}, el("tr", null, el("th", {text: "run"}),
        el("th", {text: "status"}), el("th", {text: "last step"}), el("th", {text: "open alerts"})));
      nav.appendChild(t);
    }
    var seen = {};
    doc.runs.forEach(function (r) {
      seen[r.run] = true;
      var row = t.querySelector('tr.run-row[data-run="' + CSS.escape(r.run) + '"]');
      if (!row) {
        row = el("tr", {cls: "run-row", "data-run": r.run}, el("td", {text: r.run}), el("td"),
                 el("td", {cls: "num"}), el("td", {cls: "num"}));
        row.onclick = function () { location.hash = encodeURIComponent(r.run); };
        t.appendChild(row);
      }
      row.classList.toggle("selected", r.run === current);
      var st = row.cells[1];
      st.innerHTML = "";
      st.appendChild(el("span", {cls: "badge " + r.status, text: r.status}));
      st.appendChild(document.createTextNode(" "));
      st.appendChild(el("span", {cls: "badge " + r.health, text: r.health}));
      row.cells[2].textContent = String(r.last_step);
      row.cells[3].textContent = String(r.open_alerts);
    });
    Array.prototype.slice.call(t.querySelectorAll("tr.run-row")).forEach(function (row) {
      if (!seen[row.getAttribute("data-run")]) row.remove();
    });
    if (!current) select(doc.runs[0].run);
  }

  function select(run) {
    if (run === current) return;
    current = run;
    Array.prototype.forEach.call(document.querySelectorAll("tr.run-row"), function (r) {
      r.classList.toggle("selected", r.getAttribute("data-run") === run);
    });
    pollRun();
  }

  var runTimer = null;
  function pollRun() {
    clearTimeout(runTimer);
    if (!current) return;
    var run = current;
    getJSON("api/run/" + encodeURIComponent(run)).then(function (view) {
      if (run === current) renderRun(view);
      showError(null);
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    }).catch(function (e) { showError(String(e.message || e)); })
      .then(function () { runTimer = setTimeout(pollRun, POLL_MS); });
  }

  function pollRuns() {
    getJSON("api/runs").then(renderRuns).catch(function (e) { showError(String(e.message || e)); })
      .then(function () { setTimeout(pollRuns, POLL_MS); });
  }

  function fromHash() {
    var h = decodeURIComponent(location.hash.replace(/^#/, ""));
    if (h) select(h);
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
  }
})();
