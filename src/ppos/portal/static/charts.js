// Draws the overview's growth charts with uPlot from each .chart's data-chart JSON
// (its series, rendered by the server); again after every live swap.
(function () {
  "use strict";
  function draw(root) {
    if (typeof uPlot === "undefined") { return; }
    root.querySelectorAll(".chart[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) { return; }
      var d = JSON.parse(el.dataset.chart);
      var opts = {
        width: Math.max(320, Math.min(720, el.clientWidth || 600)),
        height: 160,
        series: [
          {},
          { label: "records", stroke: "#0b57d0" },
          { label: "quarantined", stroke: "#a50e0e", scale: "q" }
        ],
        axes: [{}, {}, { scale: "q", side: 1, grid: { show: false } }]
      };
      new uPlot(opts, [d.t, d.records, d.quarantined], el);
      el.dataset.drawn = "1";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (e) { draw(e.target); });
  document.addEventListener("htmx:sseMessage", function (e) { draw(e.target); });
})();
