// atlas: keyboard navigation, filters and sorting. Plain JavaScript, no external requests.
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
    if (event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
    if (event.key === "ArrowLeft") { go("prev"); }
    else if (event.key === "ArrowRight") { go("next"); }
    else if (event.key === "/") {
      var box = document.querySelector("input.filter");
      if (box) { event.preventDefault(); box.focus(); }
    }
  });

  // Filter boxes: data-filter names the items; an item matches on data-name or its text.
  document.querySelectorAll("input.filter").forEach(function (box) {
    function apply() {
      var needle = box.value.trim().toLowerCase();
      document.querySelectorAll(box.dataset.filter).forEach(function (item) {
        var name = (item.dataset.name || item.textContent).toLowerCase();
        item.classList.toggle("hidden", needle !== "" && name.indexOf(needle) < 0);
      });
    }
    box.addEventListener("input", apply);
    if (box.value) { apply(); }  // the browser may restore a value on "back"
  });

  // Sort selects: data-sort names the container; its children carry data-<key> numbers.
  document.querySelectorAll("select.sort").forEach(function (select) {
    select.addEventListener("change", function () {
      var box = document.querySelector(select.dataset.sort);
      var key = select.value;
      var items = Array.prototype.slice.call(box.children);
      items.sort(function (a, b) {
        if (key === "i") { return Number(a.dataset.i) - Number(b.dataset.i); }
        return Number(b.dataset[key]) - Number(a.dataset[key]) ||
          Number(a.dataset.i) - Number(b.dataset.i);
      });
      var fragment = document.createDocumentFragment();
      items.forEach(function (item) { fragment.appendChild(item); });
      box.appendChild(fragment);
    });
  });

  // CAM method buttons: every overlay map carries data-cam-<method> URLs; switching only
  // changes their src, so the page never reloads. The choice is kept for the next page.
  var camButtons = document.querySelectorAll(".cam-switch button[data-cam]");
  function showCam(method) {
    var found = false;
    camButtons.forEach(function (b) { if (b.dataset.cam === method) { found = true; } });
    if (!found) { return; }
    camButtons.forEach(function (b) {
      b.setAttribute("aria-pressed", b.dataset.cam === method ? "true" : "false");
    });
    var key = "cam" + method.charAt(0).toUpperCase() + method.slice(1);
    document.querySelectorAll("img.map[data-cam-gradcam]").forEach(function (img) {
      var src = img.dataset[key];
      img.classList.toggle("hidden", !src);
      if (src) { img.src = src; }
    });
    try { window.sessionStorage.setItem("atlas-cam", method); } catch (e) { /* file:// */ }
  }
  camButtons.forEach(function (button) {
    button.addEventListener("click", function () { showCam(button.dataset.cam); });
  });
  if (camButtons.length) {
    var kept = null;
    try { kept = window.sessionStorage.getItem("atlas-cam"); } catch (e) { kept = null; }
    if (kept && kept !== "gradcam") { showCam(kept); }
  }

  // Predictions table: breed and "mistakes only" filters.
  var breed = document.querySelector("select.breed-filter");
  var wrong = document.querySelector("input.wrong-only");
  var count = document.querySelector(".count");
  function filterRows() {
    var shown = 0;
    var rows = document.querySelectorAll("table.predictions tbody tr");
    rows.forEach(function (row) {
      var show = (!breed || !breed.value || row.dataset.breed === breed.value) &&
        (!wrong || !wrong.checked || row.dataset.correct === "no");
      row.classList.toggle("hidden", !show);
      if (show) { shown += 1; }
    });
    if (count) { count.textContent = shown + " of " + rows.length + " photos"; }
  }
  if (breed || wrong) {
    [breed, wrong].forEach(function (el) { if (el) { el.addEventListener("change", filterRows); } });
    filterRows();
  }
})();
