// Draws the overview's charts with uPlot from each .chart's data-chart JSON (times,
// then series of {label, stroke, axis, values}, rendered by the server); again after
// every live swap. A series on the "right" axis has its own scale.
(function () {
  "use strict";
  function draw(root) {
    if (typeof uPlot === "undefined") { return; }
    root.querySelectorAll(".chart[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) { return; }
      var d = JSON.parse(el.dataset.chart);
      var series = [{}];
      var times = d.t.slice();
      // At least five minutes wide (a gap before a young series), so one point is not
      // drawn on an axis of years.
      var pad = times.length && times[0] > times[times.length - 1] - 300;
      if (pad) { times.unshift(times[times.length - 1] - 300); }
      var data = [times];
      var axes = [{}, {}];
      d.series.forEach(function (s) {
        var scale = s.axis === "right" ? "right" : "y";
        series.push({ label: s.label, stroke: s.stroke, scale: scale });
        data.push(pad ? [null].concat(s.values) : s.values);
      });
      if (d.series.some(function (s) { return s.axis === "right"; })) {
        axes.push({ scale: "right", side: 1, grid: { show: false } });
      }
      var opts = {
        width: Math.max(280, Math.min(340, el.clientWidth || 340)),
        height: 150,
        series: series,
        axes: axes
      };
      new uPlot(opts, data, el);
      el.dataset.drawn = "1";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (e) { draw(e.target); });
  document.addEventListener("htmx:sseMessage", function (e) { draw(e.target); });
})();
