// The maintainer's cockpit, drawn in the page (SVG, no library, nothing from the internet):
// used by the console's cockpit and by `handoff report --html`. Everything shown is inserted
// as text (textContent, SVG <text>), never as HTML. The data is GET /api/cockpit's.
"use strict";

const HandoffCharts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 560;
  const HEIGHT = 180;
  const PAD = { left: 44, right: 12, top: 12, bottom: 26 };
  const COLOURS = ["#4b3c8f", "#2f8a57", "#c0762c", "#a12a2a"];

  function node(tag, attributes, text) {
    const element = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, String(value));
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function html(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined) element.textContent = text;
    return element;
  }

  function frame(title) {
    const figure = html("figure", "chart");
    figure.appendChild(html("figcaption", null, title));
    const svg = node("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, role: "img" });
    svg.appendChild(node("title", {}, title));
    figure.appendChild(svg);
    return { figure, svg };
  }

  function axes(svg, max, format, labels) {
    const bottom = HEIGHT - PAD.bottom;
    svg.appendChild(node("line", { x1: PAD.left, y1: bottom, x2: WIDTH - PAD.right, y2: bottom, class: "axis" }));
    for (const fraction of [0, 0.5, 1]) {
      const y = bottom - fraction * (bottom - PAD.top);
      svg.appendChild(node("line", { x1: PAD.left, y1: y, x2: WIDTH - PAD.right, y2: y, class: "grid" }));
      svg.appendChild(node("text", { x: PAD.left - 4, y: y + 4, "text-anchor": "end", class: "tick" }, format(max * fraction)));
    }
    if (labels.length) {
      const shown = [0, Math.floor((labels.length - 1) / 2), labels.length - 1];
      for (const i of [...new Set(shown)]) {
        const anchor = i === 0 ? "start" : i === labels.length - 1 ? "end" : "middle";
        svg.appendChild(node("text", { x: xAt(i, labels.length), y: HEIGHT - 8, "text-anchor": anchor, class: "tick" }, labels[i]));
      }
    }
  }

  function xAt(i, n) {
    const span = WIDTH - PAD.left - PAD.right;
    return n <= 1 ? PAD.left + span / 2 : PAD.left + (i * span) / (n - 1);
  }

  function yAt(value, max) {
    const bottom = HEIGHT - PAD.bottom;
    return bottom - (max > 0 ? value / max : 0) * (bottom - PAD.top);
  }

  const percent = (value) => `${Math.round(value * 100)}%`;
  const plain = (value) => (Math.round(value * 10) / 10).toString();

  // One line per series over the days; days without data (null) are gaps.
  function lineChart(title, days, series, format, fixedMax) {
    const { figure, svg } = frame(title);
    const values = series.flatMap((s) => s.values.filter((v) => v !== null));
    const max = fixedMax || Math.max(1e-9, ...values);
    axes(svg, max, format || plain, days);
    series.forEach((s, k) => {
      let path = "";
      s.values.forEach((value, i) => {
        if (value === null) return;
        path += `${path && s.values[i - 1] !== null ? "L" : "M"}${xAt(i, days.length).toFixed(1)},${yAt(value, max).toFixed(1)}`;
        svg.appendChild(node("circle", { cx: xAt(i, days.length), cy: yAt(value, max), r: 2.5, fill: COLOURS[k % COLOURS.length], class: "point" }));
      });
      svg.insertBefore(node("path", { d: path || "M0,0", fill: "none", stroke: COLOURS[k % COLOURS.length], "stroke-width": 2, class: "series" }), svg.firstChild.nextSibling);
    });
    figure.appendChild(legend(series.map((s) => s.label)));
    return figure;
  }

  // Bars per day, side by side for several series.
  function barChart(title, days, series) {
    const { figure, svg } = frame(title);
    const max = Math.max(1, ...series.flatMap((s) => s.values));
    axes(svg, max, (v) => Math.round(v).toString(), days);
    const slot = (WIDTH - PAD.left - PAD.right) / Math.max(1, days.length);
    const width = Math.max(1, (slot * 0.8) / series.length);
    series.forEach((s, k) => {
      s.values.forEach((value, i) => {
        if (!value) return; // nothing that day
        const x = PAD.left + i * slot + slot * 0.1 + k * width;
        const y = yAt(value, max);
        svg.appendChild(node("rect", { x, y, width, height: HEIGHT - PAD.bottom - y, fill: COLOURS[k % COLOURS.length], class: "bar" }));
      });
    });
    figure.appendChild(legend(series.map((s) => s.label)));
    return figure;
  }

  // Horizontal bars, one per label (e.g. fallback rate by intent).
  function rankChart(title, items, format) {
    const figure = html("figure", "chart");
    figure.appendChild(html("figcaption", null, title));
    const rowHeight = 18;
    const height = Math.max(1, items.length) * rowHeight + 8;
    const svg = node("svg", { viewBox: `0 0 ${WIDTH} ${height}`, width: WIDTH, height, role: "img" });
    svg.appendChild(node("title", {}, title));
    const max = Math.max(1e-9, ...items.map((item) => item.value));
    items.forEach((item, i) => {
      const y = 4 + i * rowHeight;
      svg.appendChild(node("text", { x: 170, y: y + 12, "text-anchor": "end", class: "tick" }, item.label));
      const width = ((WIDTH - 240) * item.value) / max;
      svg.appendChild(node("rect", { x: 176, y: y + 2, width: Math.max(1, width), height: rowHeight - 6, fill: COLOURS[0], class: "bar" }));
      svg.appendChild(node("text", { x: 180 + width, y: y + 12, class: "tick" }, format(item.value)));
    });
    if (!items.length) svg.appendChild(node("text", { x: 10, y: 14, class: "tick" }, "no data yet"));
    figure.appendChild(svg);
    return figure;
  }

  function legend(labels) {
    const list = html("ul", "legend");
    labels.forEach((label, k) => {
      const item = html("li", null, label);
      item.style.setProperty("--swatch", COLOURS[k % COLOURS.length]);
      list.appendChild(item);
    });
    return list;
  }

  function when(timestamp) {
    return timestamp ? new Date(timestamp * 1000).toISOString().slice(0, 16).replace("T", " ") : "";
  }

  // The model registry as a table; with onPromote, a button on every model that is not live.
  function modelsTable(models, serving, onPromote) {
    const table = html("table", "models");
    const head = html("tr");
    for (const title of ["model", "status", "held-out accuracy (95% interval)", "automation", "threshold", "trained", "promoted", ""]) {
      head.appendChild(html("th", null, title));
    }
    table.appendChild(html("thead")).appendChild(head);
    const body = table.appendChild(html("tbody"));
    for (const model of [...models].reverse()) {
      const row = html("tr", model.status === "live" ? "live" : "");
      row.dataset.model = model.name;
      const interval = model.accuracy_interval ? ` (${percent(model.accuracy_interval[0])}–${percent(model.accuracy_interval[1])})` : "";
      const cells = [
        model.name + (model.name === serving ? " · serving" : ""),
        model.status,
        model.accuracy === null || model.accuracy === undefined ? "" : `${percent(model.accuracy)}${interval}`,
        model.automation === null || model.automation === undefined ? "" : percent(model.automation),
        model.threshold === null || model.threshold === undefined ? "" : model.threshold.toFixed(3),
        when(model.trained_at),
        model.promoted_at ? `${when(model.promoted_at)} by ${model.promoted_by || "?"}` : "",
      ];
      for (const text of cells) row.appendChild(html("td", null, text));
      const action = html("td");
      if (onPromote && model.status !== "live") {
        const button = html("button", "promote", model.promoted_at ? "Roll back to this" : "Make live");
        button.type = "button";
        button.addEventListener("click", () => onPromote(model));
        action.appendChild(button);
      }
      row.appendChild(action);
      body.appendChild(row);
    }
    return table;
  }

  // Everything but the models table: counts waiting for people, then the charts.
  function render(root, data) {
    root.replaceChildren();
    const pending = data.pending || {};
    const counts = html("p", "pending");
    counts.textContent = `Waiting for people now: ${pending.review || 0} candidates to review · ${pending.verification || 0} answers to verify · ${pending.held || 0} answers held for approval`;
    root.appendChild(counts);
    const days = data.days.map((day) => day.slice(5));
    root.appendChild(lineChart("Handoff and automation rate per day", days, [
      { label: "handoff rate (of conversations)", values: data.handoff_rate },
      { label: "automation rate (user messages the bot answered)", values: data.automation_rate },
    ], percent, 1));
    root.appendChild(lineChart("Time to the first agent reply (median, seconds)", days, [
      { label: "first reply", values: data.first_reply_median_s },
    ], plain));
    root.appendChild(barChart("Labels and approvals per day", days, [
      { label: "labels (handoffs, verification)", values: data.labels },
      { label: "approvals and corrections of held answers", values: data.approvals },
    ]));
    root.appendChild(rankChart("Fallback rate by intent (all time)", data.fallback_by_intent.map((item) => ({
      label: `${item.intent} (${item.messages})`, value: item.rate,
    })), percent));
    const curve = data.learning_curve;
    root.appendChild(lineChart("Learning curve: held-out accuracy of each model that went live", curve.map((point) => point.name.replace(/^assistant-|\.tar\.gz$/g, "")), [
      { label: "accuracy", values: curve.map((point) => point.accuracy) },
      { label: "95% interval, low", values: curve.map((point) => (point.interval ? point.interval[0] : null)) },
      { label: "95% interval, high", values: curve.map((point) => (point.interval ? point.interval[1] : null)) },
    ], percent, 1));
  }

  return { render, modelsTable, lineChart, barChart, rankChart };
})();
