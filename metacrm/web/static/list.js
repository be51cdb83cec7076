// The list page's tools (pages_list.py). Everything works without this script (plain forms);
// with it, "select all" ticks every row of the page, and each builder row offers only the
// operators its field takes.
(function () {
  "use strict";
  function start() {
    var all = document.getElementById("select-all");
    if (all) {
      document.addEventListener("change", function (evt) {
        var target = evt.target;
        if (target.id === "select-all") {
          document.querySelectorAll("input.pick").forEach(function (box) { box.checked = target.checked; });
        } else if (target.classList && target.classList.contains("pick") && !target.checked) {
          var head = document.getElementById("select-all");
          if (head) head.checked = false;
        }
      });
    }
    document.querySelectorAll("fieldset.condition").forEach(function (row) {
      var field = row.querySelector("select.bf");
      var op = row.querySelector("select.bo");
      if (!field || !op) return;
      var fit = function () {
        var chosen = field.options[field.selectedIndex];
        var ops = chosen && chosen.dataset.ops ? chosen.dataset.ops.split(" ") : null;
        var first = null;
        Array.prototype.forEach.call(op.options, function (o) {
          var ok = !ops || ops.indexOf(o.value) >= 0;
          o.disabled = !ok;
          o.hidden = !ok;
          if (ok && first === null) first = o;
        });
        if (op.selectedOptions[0] && op.selectedOptions[0].disabled && first) first.selected = true;
      };
      field.addEventListener("change", fit);
      fit();
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
