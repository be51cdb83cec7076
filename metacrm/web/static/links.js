// Link pickers (docs/web.md): a polymorphic link's search box asks the options of the entity
// chosen in the select beside it (data-entity-from), and choosing another entity searches again.
(function () {
  "use strict";
  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail.elt;
    var from = elt && elt.getAttribute && elt.getAttribute("data-entity-from");
    if (!from) return;
    var select = document.getElementById(from);
    if (select && /^[a-z][a-z0-9_]*$/.test(select.value)) {
      event.detail.path = (document.documentElement.dataset.root || "") + "/" + select.value + "/options";
    }
  });
  document.addEventListener("change", function (event) {
    var target = event.target;
    var input = target && target.getAttribute && document.getElementById(target.getAttribute("data-options-for") || "");
    if (input && window.htmx) window.htmx.trigger(input, "search");
  });
})();
