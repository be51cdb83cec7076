// Report charts and model diagrams. The data come from JSON blocks the server wrote (the
// Content-Security-Policy allows no inline script): #chart-data for Chart.js, and for each
// figure.diagram the Mermaid text in the block its data-diagram names.
(function () {
  "use strict";
  var COLOURS = ["#3182bd", "#9ecae1", "#e6550d", "#31a354", "#756bb1", "#fdae6b", "#636363", "#a1d99b",
                 "#de9ed6", "#6baed6", "#fd8d3c", "#74c476"];

  function data(id) {
    var block = document.getElementById(id);
    return block ? JSON.parse(block.textContent) : null;
  }

  function chart() {
    var spec = data("chart-data");
    var canvas = document.getElementById("chart");
    if (!spec || !canvas || typeof Chart === "undefined") return;
    spec.datasets.forEach(function (set, i) { set.backgroundColor = COLOURS[i % COLOURS.length]; });
    var chartObj = new Chart(canvas, {
      type: "bar",
      data: { labels: spec.labels, datasets: spec.datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { x: { stacked: spec.stacked }, y: { stacked: spec.stacked, beginAtZero: true } }
      }
    });
    canvas.dataset.rendered = String(chartObj.data.datasets.length);
  }

  function diagrams() {
    var figures = document.querySelectorAll("figure.diagram[data-diagram]");
    if (!figures.length || typeof mermaid === "undefined") return;
    mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral" });
    var n = 0;
    figures.forEach(function (figure) {
      var text = data(figure.dataset.diagram);
      n += 1;
      mermaid.render("mmd-" + n, text).then(function (out) {
        figure.innerHTML = out.svg;
        figure.dataset.rendered = "1";
      }, function (err) {
        figure.textContent = ((document.querySelector("[data-diagram-failed]") || {dataset: {}}).dataset.diagramFailed || "The diagram could not be drawn:") + " " + err;
        figure.dataset.rendered = "error";
      });
    });
  }

  function start() { chart(); diagrams(); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
