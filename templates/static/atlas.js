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
      var box = document.querySelector("input.filter") || document.querySelector("input.site-search");
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

  // Predictions table: class and "mistakes only" filters.
  var breed = document.querySelector("select.class-filter");
  var wrong = document.querySelector("input.wrong-only");
  var count = document.querySelector(".count");
  function filterRows() {
    var shown = 0;
    var rows = document.querySelectorAll("table.predictions tbody tr");
    rows.forEach(function (row) {
      var show = (!breed || !breed.value || row.dataset.class === breed.value) &&
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

  // Site search: search-index.js (a script, so it loads from file:// too) is fetched the
  // first time the box is used; results link relative to this page (data-root).
  var searchBox = document.querySelector("input.site-search");
  var searchList = document.querySelector("ol.search-results");
  var searchEntries = null;
  var KINDS = ["layer", "class", "photo", "unit"];
  function searchIndex(data) {
    var entries = [];
    function add(kind, label, text, path) {
      entries.push({kind: kind, label: label, text: text.toLowerCase(), path: path});
    }
    data.layers.forEach(function (layer) {
      var model = data.models[layer[0]];
      add("layer", model[1] + " · " + layer[1], model[0] + " " + model[1] + " " + layer[1], layer[2]);
      var folder = layer[2].replace(/index\.html$/, "units/");
      layer[3].forEach(function (unit) {
        var breeds = unit.slice(1).map(function (b) { return data.labels[b]; });
        add("unit", model[1] + " · " + layer[1] + " unit " + unit[0] +
            (breeds.length ? " (" + breeds.join(", ") + ")" : ""),
            model[0] + " " + layer[1] + " unit " + unit[0] + " " + breeds.join(" "),
            folder + unit[0] + ".html");
      });
    });
    data.photos.forEach(function (photo) {
      var breed = data.labels[photo[1]];
      photo[2].forEach(function (where) {
        var model = data.models[where[0]];
        add("photo", photo[0] + (breed ? " (" + breed + ")" : "") + " · " + model[1],
            photo[0] + " " + breed + " " + model[0],
            where[1] || model[2].replace(/index\.html$/, "predictions.html"));
      });
    });
    data.classes.forEach(function (classes) {
      var model = data.models[classes[0]];
      var accuracy = model[2].replace(/index\.html$/, "accuracy.html");
      classes[1].forEach(function (label) {
        add("class", label + " · " + model[1], label + " " + model[0], accuracy);
      });
    });
    return entries;
  }
  function searchShow() {
    var words = searchBox.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    searchList.textContent = "";
    if (!words.length || !searchEntries) { searchList.classList.add("hidden"); return; }
    var found = [];
    searchEntries.forEach(function (entry, i) {
      var score = 0;
      for (var w = 0; w < words.length; w += 1) {
        var at = entry.text.indexOf(words[w]);
        if (at < 0) { return; }
        var end = at + words[w].length;  // whole words rank first ("unit 3" before "unit 30")
        if ((at === 0 || /[\s_\/.-]/.test(entry.text[at - 1])) &&
            (end === entry.text.length || /[\s_\/.-]/.test(entry.text[end]))) { score += 1; }
      }
      found.push({entry: entry, score: score, i: i});
    });
    found.sort(function (a, b) {
      return b.score - a.score || KINDS.indexOf(a.entry.kind) - KINDS.indexOf(b.entry.kind) ||
        a.i - b.i;
    });
    found.slice(0, 30).forEach(function (hit) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = searchBox.dataset.root + hit.entry.path;
      a.textContent = hit.entry.label;
      var kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = hit.entry.kind;
      li.appendChild(a);
      li.appendChild(kind);
      searchList.appendChild(li);
    });
    if (!found.length) {
      var none = document.createElement("li");
      none.textContent = "nothing found";
      searchList.appendChild(none);
    }
    searchList.classList.remove("hidden");
  }
  function searchLoad() {
    if (searchEntries || searchBox.dataset.loading) { return; }
    searchBox.dataset.loading = "yes";
    var script = document.createElement("script");
    script.src = searchBox.dataset.root + "search-index.js";
    script.onload = function () { searchEntries = searchIndex(window.ATLAS_SEARCH); searchShow(); };
    document.head.appendChild(script);
  }
  if (searchBox && searchList) {
    searchBox.addEventListener("focus", searchLoad);
    searchBox.addEventListener("input", function () { searchLoad(); searchShow(); });
    searchBox.addEventListener("keydown", function (event) {
      var first = searchList.querySelector("a");
      if (event.key === "Enter" && first) { window.location.href = first.href; }
    });
  }

  // Confusion pages: the layer select shows one layer's maps at a time.
  var layerSelect = document.querySelector("select.layer-switch");
  if (layerSelect) {
    layerSelect.addEventListener("change", function () {
      document.querySelectorAll("[data-layer]").forEach(function (el) {
        el.classList.toggle("hidden", el.dataset.layer !== layerSelect.value);
      });
    });
  }
})();
