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
      var data = [d.t];
      var axes = [{}, {}];
      d.series.forEach(function (s) {
        var scale = s.axis === "right" ? "right" : "y";
        series.push({ label: s.label, stroke: s.stroke, scale: scale });
        data.push(s.values);
      });
      if (d.series.some(function (s) { return s.axis === "right"; })) {
        axes.push({ scale: "right", side: 1, grid: { show: false } });
      }
      var opts = {
        width: Math.max(280, Math.min(340, el.clientWidth || 340)),
        height: 150,
        series: series,
        axes: axes,
        // At least five minutes wide, so a young series is not drawn over years.
        scales: { x: { time: true, range: function (u, min, max) { return [Math.min(min, max - 300), max]; } } }
      };
      new uPlot(opts, data, el);
      el.dataset.drawn = "1";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (e) { draw(e.target); });
  document.addEventListener("htmx:sseMessage", function (e) { draw(e.target); });
})();
