// The kanban board: dragging a card to another column posts the move (with the session's CSRF
// token); a refused move puts the card back where it was and says why. Without a mouse, each
// card's "Move to" menu posts the same move as a plain form.
(function () {
  "use strict";
  function start() {
    var board = document.getElementById("board");
    if (!board || typeof Sortable === "undefined") return;
    var entity = board.dataset.entity;
    var csrf = document.body.dataset.csrf;
    var status = document.getElementById("board-status");
    board.querySelectorAll("ul.cards").forEach(function (list) {
      Sortable.create(list, {
        group: "board",
        animation: 0,
        filter: "select, button, input, label",
        preventOnFilter: false,
        onEnd: function (evt) {
          if (evt.from === evt.to) return;
          var card = evt.item;
          var stage = evt.to.dataset.stage;
          var back = function (reason) {
            var ref = evt.from.children[evt.oldIndex] || null;
            evt.from.insertBefore(card, ref);
            status.textContent = reason;
            status.className = "status refused";
            board.dataset.busy = "";
          };
          board.dataset.busy = "1";
          status.textContent = "";
          fetch((document.documentElement.dataset.root || "") + "/" + entity + "/" + card.dataset.id + "/move", {
            method: "POST",
            credentials: "same-origin",
            headers: {
              "Content-Type": "application/x-www-form-urlencoded",
              "Accept": "application/json",
              "X-CSRF-Token": csrf
            },
            body: new URLSearchParams({ stage: stage }).toString()
          }).then(function (response) {
            return response.json().then(function (body) {
              if (response.ok && body.ok) {
                status.textContent = (board.dataset.moved || "moved to") + " " + stage;
                status.className = "status moved";
                window.location.reload();
              } else {
                back(body.reason || ((board.dataset.refused || "refused") + " (" + response.status + ")"));
              }
            });
          }).catch(function (err) {
            back((board.dataset.unsent || "the move was not sent:") + " " + err);
          });
        }
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
