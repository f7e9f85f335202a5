// Coinage: the little behaviour htmx does not cover. No inline scripts (the CSP allows 'self' only).
(function () {
  "use strict";

  // ---- token autocomplete: typing "<" lists the live custom tokens (server-rendered by /search/suggest)
  function suggestBox() { return document.getElementById("suggestions"); }
  function queryInput() { return document.getElementById("q"); }

  function insertToken(token) {
    var input = queryInput();
    if (!input) return;
    var value = input.value;
    var start = value.lastIndexOf("<");
    var head = start >= 0 && value.indexOf(">", start) < 0 ? value.slice(0, start) : value + (value && !/\s$/.test(value) ? " " : "");
    input.value = head + token + " ";
    var box = suggestBox();
    if (box) box.innerHTML = "";
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  // a catalog suggestion (data-query): search it at once
  function chooseQuery(query) {
    var input = queryInput();
    if (!input) return;
    input.value = query;
    var box = suggestBox();
    if (box) box.innerHTML = "";
    var form = document.getElementById("search-form");
    if (form) form.requestSubmit();  // the submit listener below closes the dropdown for good
  }

  function choose(item) {
    if (item.hasAttribute("data-token")) insertToken(item.getAttribute("data-token"));
    else chooseQuery(item.getAttribute("data-query"));
  }

  document.addEventListener("click", function (event) {
    var item = event.target.closest("#suggestions [data-token], #suggestions [data-query]");
    if (item) {
      event.preventDefault();
      choose(item);
      return;
    }
    var box = suggestBox();
    if (box && !event.target.closest(".q")) box.innerHTML = "";
  });

  // a search was submitted: close the dropdown, and keep suggestions for that same text from reopening it
  var submitted = null;
  document.addEventListener("submit", function (event) {
    if (event.target.id !== "search-form") return;
    var box = suggestBox(), input = queryInput();
    if (box) box.innerHTML = "";
    submitted = input ? input.value : null;
  });
  // a results page opened by its URL: its query was submitted already, so focusing the box does not open the
  // dropdown over the results with the very text searched
  document.addEventListener("DOMContentLoaded", function () {
    var input = queryInput();
    if (submitted === null && input && input.value) submitted = input.value;
  });
  document.addEventListener("htmx:beforeSwap", function (event) {
    var input = queryInput();
    if (event.detail.target && event.detail.target.id === "suggestions" && input && input.value === submitted) {
      event.detail.shouldSwap = false;
    }
  });

  document.addEventListener("keydown", function (event) {
    if (!event.target || event.target.id !== "q") return;
    var box = suggestBox();
    var items = box ? Array.prototype.slice.call(box.querySelectorAll("[data-token], [data-query]")) : [];
    if (event.key === "Escape" && box) { box.innerHTML = ""; return; }
    if (!items.length) return;
    var current = items.findIndex(function (el) { return el.classList.contains("active"); });
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      var next = event.key === "ArrowDown" ? (current + 1) % items.length : (current - 1 + items.length) % items.length;
      items.forEach(function (el) { el.classList.remove("active"); });
      items[next].classList.add("active");
    } else if ((event.key === "Enter" || event.key === "Tab") && current >= 0) {
      event.preventDefault();
      choose(items[current]);
    }
  });

  // ---- concept images: client-side checks (count, type, size) before anything is uploaded
  function checkImages(input) {
    var files = Array.prototype.slice.call(input.files || []);
    var min = parseInt(input.dataset.min || "3", 10), max = parseInt(input.dataset.max || "50", 10);
    var maxBytes = parseInt(input.dataset.maxBytes || "0", 10);
    var types = (input.getAttribute("accept") || "").split(",").map(function (t) { return t.trim(); });
    var problems = [];
    if (files.length < min || files.length > max) problems.push("Choose " + min + " to " + max + " images (you chose " + files.length + ").");
    files.forEach(function (f) {
      if (types.length && types.indexOf(f.type) < 0) problems.push(f.name + " is not a PNG, JPEG or WebP image.");
      if (maxBytes && f.size > maxBytes) problems.push(f.name + " is larger than " + Math.round(maxBytes / 1048576) + " MiB.");
    });
    var out = document.getElementById(input.dataset.report);
    if (out) {
      out.textContent = problems.join(" ");
      out.classList.toggle("hidden", problems.length === 0);
    }
    var picked = document.getElementById(input.dataset.picked);
    if (picked) {
      picked.innerHTML = "";
      files.slice(0, 50).forEach(function (f) {
        if (f.type.indexOf("image/") !== 0) return;
        var img = document.createElement("img");
        img.alt = f.name;
        img.src = URL.createObjectURL(f);
        picked.appendChild(img);
      });
    }
    input.setCustomValidity(problems.join(" "));
    return problems.length === 0;
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("input[type=file][data-check]")) checkImages(event.target);
  });

  document.addEventListener("submit", function (event) {
    var input = event.target.querySelector && event.target.querySelector("input[type=file][data-check]");
    if (input && !checkImages(input)) {
      event.preventDefault();
      event.stopPropagation();
      input.reportValidity();
    }
  }, true);

  // ---- search analytics: a click on a result card reports its product and rank (POST /api/click, a beacon)
  document.addEventListener("click", function (event) {
    var card = event.target.closest && event.target.closest(".grid[data-search-id] .card[data-rank]");
    if (!card || !navigator.sendBeacon) return;
    var grid = card.closest(".grid");
    var body = JSON.stringify({search_id: grid.getAttribute("data-search-id"),
                               product_id: card.getAttribute("data-product"),
                               position: parseInt(card.getAttribute("data-rank"), 10)});
    navigator.sendBeacon("/api/click", new Blob([body], {type: "application/json"}));
  });

  // ---- htmx: a request that failed at the network level says so instead of doing nothing
  document.addEventListener("htmx:sendError", function () {
    var bar = document.getElementById("net-error");
    if (bar) bar.classList.remove("hidden");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var bar = document.getElementById("net-error");
    if (bar && event.detail && event.detail.xhr && event.detail.xhr.status) bar.classList.add("hidden");
  });
})();
