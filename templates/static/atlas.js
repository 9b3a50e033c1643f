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
  var KINDS = ["layer", "atlas", "class", "photo", "unit"];
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
    (data.atlases || []).forEach(function (atlas) {
      var model = data.models[atlas[0]];
      add("atlas", model[1] + " · " + atlas[1] + " activation atlas",
          model[0] + " " + model[1] + " " + atlas[1] + " activation atlas", atlas[2]);
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
  // Activation atlas pages: the picture zooms (wheel, pinch, buttons) and pans (drag)
  // under one transform; the cells are buttons laid over it in percentages, so they zoom
  // with it. The cells' details are embedded JSON (no fetch: the page works from file://).
  var viewport = document.querySelector(".atlas-viewport");
  if (viewport) { atlasPage(viewport); }

  function atlasPage(viewport) {
    var data = JSON.parse(document.getElementById("atlas-data").textContent);
    var stage = viewport.querySelector(".atlas-stage");
    var cells = Array.prototype.slice.call(viewport.querySelectorAll(".cell"));
    var panel = document.querySelector(".atlas-panel");
    var view = {s: 1, x: 0, y: 0};
    var MAX = 16;
    var pinned = null;

    function apply() {
      var side = viewport.clientWidth;
      view.s = Math.min(MAX, Math.max(1, view.s));
      view.x = Math.min(0, Math.max(side - side * view.s, view.x));
      view.y = Math.min(0, Math.max(side - side * view.s, view.y));
      stage.style.transform = "translate(" + view.x + "px," + view.y + "px) scale(" + view.s + ")";
      stage.style.setProperty("--z", view.s);
      viewport.classList.toggle("zoomed", view.s > 1.001);
    }
    function zoom(factor, px, py) {  // about a point of the viewport (px, py)
      var side = viewport.clientWidth;
      if (px === undefined) { px = side / 2; py = side / 2; }
      var s = Math.min(MAX, Math.max(1, view.s * factor));
      view.x = px - (px - view.x) * (s / view.s);
      view.y = py - (py - view.y) * (s / view.s);
      view.s = s;
      apply();
    }
    function local(event) {
      var box = viewport.getBoundingClientRect();
      return [event.clientX - box.left, event.clientY - box.top];
    }
    viewport.addEventListener("wheel", function (event) {
      event.preventDefault();
      var at = local(event);
      zoom(Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.002)), at[0], at[1]);
    }, {passive: false});
    document.querySelectorAll("[data-zoom]").forEach(function (button) {
      button.addEventListener("click", function () {
        var how = button.dataset.zoom;
        if (how === "reset") { view = {s: 1, x: 0, y: 0}; apply(); }
        else { zoom(how === "in" ? 1.5 : 1 / 1.5); }
      });
    });
    // A scroll of the viewport (the browser bringing a focused cell into view) would
    // shift the picture under the transform: undo it.
    viewport.addEventListener("scroll", function () { viewport.scrollLeft = 0; viewport.scrollTop = 0; });
    window.addEventListener("resize", apply);

    // Drag to pan, two pointers to pinch. The pointer is captured only once it moved, so
    // that a plain click still reaches its cell.
    var pointers = {};
    var drag = null;
    function spread() {
      var p = Object.keys(pointers).map(function (k) { return pointers[k]; });
      return {d: Math.hypot(p[0][0] - p[1][0], p[0][1] - p[1][1]),
        x: (p[0][0] + p[1][0]) / 2, y: (p[0][1] + p[1][1]) / 2};
    }
    viewport.addEventListener("pointerdown", function (event) {
      if (event.button !== 0) { return; }
      pointers[event.pointerId] = local(event);
      drag = {x: event.clientX, y: event.clientY, vx: view.x, vy: view.y, moved: false,
        pinch: Object.keys(pointers).length === 2 ? spread() : null};
    });
    viewport.addEventListener("pointermove", function (event) {
      if (!drag || !(event.pointerId in pointers)) { return; }
      pointers[event.pointerId] = local(event);
      if (drag.pinch && Object.keys(pointers).length === 2) {
        var now = spread();
        zoom(now.d / Math.max(drag.pinch.d, 1), now.x, now.y);
        drag.pinch = now;
        drag.moved = true;
        return;
      }
      var dx = event.clientX - drag.x;
      var dy = event.clientY - drag.y;
      if (!drag.moved && Math.hypot(dx, dy) < 5) { return; }
      if (!drag.moved) { drag.moved = true; viewport.setPointerCapture(event.pointerId); }
      viewport.classList.add("dragging");
      view.x = drag.vx + dx;
      view.y = drag.vy + dy;
      apply();
    });
    function release(event) {
      delete pointers[event.pointerId];
      viewport.classList.remove("dragging");
      if (drag && drag.moved) { drag.ended = Date.now(); }
      if (!Object.keys(pointers).length && drag && !drag.moved) { drag = null; }
    }
    viewport.addEventListener("pointerup", release);
    viewport.addEventListener("pointercancel", release);

    function el(tag, cls, text) {
      var node = document.createElement(tag);
      if (cls) { node.className = cls; }
      if (text !== undefined) { node.textContent = text; }
      return node;
    }
    function pct(v) { return (100 * v).toFixed(v < 0.1 ? 1 : 0) + " %"; }
    function label(i) { return i >= 0 ? data.labels[i] : "no label"; }
    function patch(p) {
      var photo = data.photos[p[0]];
      var node = el(photo[2] ? "a" : "span", "patch");
      if (photo[2]) { node.href = photo[2]; }  // links relative to this page
      node.title = photo[0] + (photo[2] ? "" : " (this photo has no page)");
      var crop = el("span", "crop");
      var height = 72;  // the region's own aspect ratio, within the 96 px tile
      crop.style.width = Math.round(Math.min(96, Math.max(36, height * p[5]))) + "px";
      crop.style.height = height + "px";
      if (photo[1]) {
        crop.style.backgroundImage = "url(\"" + photo[1] + "\")";
        crop.style.backgroundSize = p[1] + "% " + p[2] + "%";
        crop.style.backgroundPosition = p[3] + "% " + p[4] + "%";
      }
      node.appendChild(crop);
      node.appendChild(el("span", "name", photo[0]));
      return node;
    }
    function show(index) {
      var cell = data.cells[index];
      panel.textContent = "";
      panel.appendChild(el("h2", "cell-label", label(cell.l)));
      panel.appendChild(el("p", "muted small", "row " + (cell.r + 1) + ", column " + (cell.c + 1)));
      var facts = el("dl", "facts");
      [["share", cell.s === null ? "–" : pct(cell.s)], ["vectors", String(cell.n)],
        ["cosine", cell.cos === null ? "–" : cell.cos.toFixed(2)]].forEach(function (pair) {
        facts.appendChild(el("dt", "", pair[0]));
        facts.appendChild(el("dd", "cell-" + pair[0], pair[1]));
      });
      panel.appendChild(facts);
      if (cell.top.length) {
        // bars relative to the strongest label: shares of many classes can all be small
        var most = Math.max.apply(null, cell.top.map(function (t) { return t[1]; })) || 1;
        panel.appendChild(el("h3", "", "Strongest labels"));
        var bars = el("ol", "bars top");
        cell.top.forEach(function (t) {
          var li = el("li");
          li.appendChild(el("span", "label", label(t[0])));
          var track = el("span", "track");
          var bar = el("span", "bar");
          bar.style.width = Math.round(100 * t[1] / most) + "%";
          track.appendChild(bar);
          li.appendChild(track);
          li.appendChild(el("span", "p", pct(t[1])));
          bars.appendChild(li);
        });
        panel.appendChild(bars);
      }
      if (cell.p.length) {
        panel.appendChild(el("h3", "", "Where its vectors came from"));
        var patches = el("div", "patches");
        cell.p.forEach(function (p) { patches.appendChild(patch(p)); });
        panel.appendChild(patches);
      }
    }
    function cellOf(event) {
      var target = event.target.closest ? event.target.closest(".cell") : null;
      return target && viewport.contains(target) ? target : null;
    }
    viewport.addEventListener("mouseover", function (event) {
      var cell = cellOf(event);
      if (cell && !viewport.classList.contains("dragging")) { show(Number(cell.dataset.i)); }
    });
    viewport.addEventListener("mouseleave", function () {
      if (pinned) { show(Number(pinned.dataset.i)); }
    });
    function pin(cell, focus) {
      if (pinned) { pinned.classList.remove("selected"); pinned.tabIndex = -1; }
      pinned = cell;
      cell.classList.add("selected");
      cell.tabIndex = 0;
      if (focus) { cell.focus({preventScroll: true}); }
      show(Number(cell.dataset.i));
      reveal(cell);
    }
    function reveal(cell) {  // pan a focused cell into view when zoomed in
      var box = cell.getBoundingClientRect();
      var frame = viewport.getBoundingClientRect();
      if (box.left >= frame.left && box.right <= frame.right &&
          box.top >= frame.top && box.bottom <= frame.bottom) { return; }
      view.x += (frame.left + frame.width / 2) - (box.left + box.width / 2);
      view.y += (frame.top + frame.height / 2) - (box.top + box.height / 2);
      apply();
    }
    viewport.addEventListener("click", function (event) {
      var cell = cellOf(event);
      if (drag && drag.ended && Date.now() - drag.ended < 300) { drag = null; return; }
      drag = null;
      if (cell) { pin(cell, true); }
    });
    viewport.addEventListener("focusin", function (event) {
      var cell = cellOf(event);
      if (cell && cell !== pinned) { pin(cell, false); }
    });
    var at = {};
    cells.forEach(function (cell) {
      var d = data.cells[Number(cell.dataset.i)];
      at[d.r + "," + d.c] = cell;
    });
    var STEPS = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]};
    viewport.addEventListener("keydown", function (event) {
      var cell = cellOf(event);
      if (event.key === "+" || event.key === "=") { zoom(1.5); event.preventDefault(); return; }
      if (event.key === "-") { zoom(1 / 1.5); event.preventDefault(); return; }
      var step = STEPS[event.key];
      if (!cell || !step) { return; }
      event.preventDefault();
      event.stopPropagation();  // the arrows move between cells here, not between pages
      var d = data.cells[Number(cell.dataset.i)];
      var grid = Number(viewport.dataset.grid);
      for (var k = 1; k < grid; k += 1) {
        var next = at[(d.r + step[0] * k) + "," + (d.c + step[1] * k)];
        if (next) { pin(next, true); return; }
      }
    });

    // The class filter: its cells outlined, the others dimmed.
    var filter = document.querySelector("select.atlas-filter");
    var count = document.querySelector(".atlas-count");
    function highlight() {
      var chosen = filter.value;
      var matched = 0;
      cells.forEach(function (cell) {
        var match = chosen !== "" && cell.dataset.l === chosen;
        cell.classList.toggle("match", match);
        if (match) { matched += 1; }
      });
      viewport.classList.toggle("filtering", chosen !== "");
      count.textContent = chosen === "" ? cells.length + " cells" :
        matched + " of " + cells.length + " cells labelled " + data.labels[Number(chosen)];
    }
    if (filter) {
      filter.addEventListener("change", highlight);
      if (filter.value) { highlight(); }  // the browser may restore a choice on "back"
    }
    apply();
  }
})();
