// atlas: keyboard navigation, filters and sorting. No external requests.
(function () {
  "use strict";
  function go(rel) {
    var a = document.querySelector('a[rel="' + rel + '"]');
    if (a) { window.location.href = a.href; }
  }
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "select" || tag === "textarea") {
      if (event.key === "Escape") { event.target.blur(); }
      return;
    }
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (event.key === "ArrowLeft") { go("prev"); }
    else if (event.key === "ArrowRight") { go("next"); }
    else if (event.key === "/") {
      var box = document.querySelector("input.filter");
      if (box) { event.preventDefault(); box.focus(); }
    }
  });
  document.querySelectorAll("input.filter").forEach(function (box) {
    box.addEventListener("input", function () {
      var needle = box.value.trim().toLowerCase();
      document.querySelectorAll(box.dataset.filter).forEach(function (item) {
        var name = (item.dataset.name || item.textContent).toLowerCase();
        item.classList.toggle("hidden", needle !== "" && name.indexOf(needle) < 0);
      });
    });
  });
  document.querySelectorAll("select.sort").forEach(function (select) {
    select.addEventListener("change", function () {
      var box = document.querySelector(select.dataset.sort);
      var key = select.value;
      var items = Array.prototype.slice.call(box.children);
      items.sort(function (a, b) {
        if (key === "index") { return Number(a.dataset.index) - Number(b.dataset.index); }
        return Number(b.dataset[key]) - Number(a.dataset[key]);
      });
      items.forEach(function (item) { box.appendChild(item); });
    });
  });
  function filterRows() {
    var breed = document.querySelector("select.breed-filter");
    var wrong = document.querySelector("input.wrong-only");
    document.querySelectorAll("table.predictions tbody tr").forEach(function (row) {
      var show = (!breed || !breed.value || row.dataset.breed === breed.value) &&
        (!wrong || !wrong.checked || row.dataset.correct === "no");
      row.classList.toggle("hidden", !show);
    });
  }
  document.querySelectorAll("select.breed-filter, input.wrong-only").forEach(function (el) {
    el.addEventListener("change", filterRows);
  });
})();
