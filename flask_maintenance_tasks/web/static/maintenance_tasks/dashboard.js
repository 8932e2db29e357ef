/* flask-maintenance-tasks dashboard behaviour, on top of htmx.
 *
 * The pages work without this file (and without htmx): forms post and
 * redirect. With it, the regions marked data-poll refresh themselves while a
 * run is active, and this file decides when a refresh must wait:
 *   - the live-refresh switch is off (remembered in localStorage);
 *   - the tab is hidden;
 *   - the person is using a control inside the region, or selecting text in it.
 * The content security policy forbids eval, so these rules live here rather
 * than in hx-trigger filters. Event names of htmx 2 and htmx 4 are both heard.
 */
(function () {
  "use strict";

  var STORAGE_KEY = "maintenance-tasks:live-refresh";
  var ACTIVE = ["enqueued", "running", "pausing", "paused", "interrupted", "cancelling"];

  function on(names, handler) {
    names.forEach(function (name) {
      document.addEventListener(name, handler);
    });
  }

  function stored(value) {
    try {
      if (value === undefined) return window.localStorage.getItem(STORAGE_KEY);
      window.localStorage.setItem(STORAGE_KEY, value);
    } catch (error) {
      return null; // storage disabled: the switch still works for this page
    }
    return value;
  }

  /* -- the live-refresh switch --------------------------------------------- */

  var toggle = document.getElementById("live-refresh");

  function liveRefreshOn() {
    return !toggle || toggle.checked;
  }

  function refreshNow() {
    if (!window.htmx) return;
    document.querySelectorAll("[data-poll]").forEach(function (region) {
      window.htmx.trigger(region, "mtasks-refresh");
    });
  }

  if (toggle) {
    toggle.checked = stored() !== "off";
    toggle.closest("label").hidden = false;
    toggle.addEventListener("change", function () {
      stored(toggle.checked ? "on" : "off");
      if (toggle.checked) refreshNow();
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && liveRefreshOn()) refreshNow();
  });

  /* -- when a refresh must wait -------------------------------------------- */

  function inUse(region) {
    var active = document.activeElement;
    if (active && active !== document.body && region.contains(active)) {
      if (active.matches("input, select, textarea")) return true;
      try {
        if (active.matches(":focus-visible")) return true;
      } catch (error) {
        return true;
      }
    }
    var selection = window.getSelection && window.getSelection();
    return Boolean(
      selection && !selection.isCollapsed && selection.anchorNode &&
      region.contains(selection.anchorNode)
    );
  }

  on(["htmx:beforeRequest", "htmx:before:request"], function (event) {
    var elt = event.detail && event.detail.elt;
    if (!elt || !elt.hasAttribute || !elt.hasAttribute("data-poll")) return;
    if (!liveRefreshOn() || document.hidden || inUse(elt)) event.preventDefault();
  });

  /* A refresh already on its way when the operator took a control waits too:
     its answer is dropped, and the next poll brings the region up to date.
     Only a refresh's answer: the answer to an action (a button pressed with the
     keyboard keeps the focus in the region) is always shown. The event's elt is
     the swap's target; the element that sent the request is the config's. */
  on(["htmx:beforeSwap", "htmx:before:swap"], function (event) {
    var detail = event.detail || {};
    var target = detail.elt;
    var config = detail.requestConfig;
    var sender = config && config.elt ? config.elt : target;
    if (!sender || !sender.hasAttribute || !sender.hasAttribute("data-poll")) return;
    if (inUse(target || sender)) detail.shouldSwap = false;
  });

  /* -- the keyboard's place after an action --------------------------------
     An action's answer replaces the runs region, and with it the button that
     was pressed: the focus would fall back to the page's start. It goes to the
     summary of the card acted on instead, so that Tab reaches its buttons. */

  var actedOn = null;

  on(["htmx:beforeRequest", "htmx:before:request"], function (event) {
    var elt = event.detail && event.detail.elt;
    if (!elt || !elt.closest || elt.hasAttribute("data-poll")) return;
    var card = elt.closest("article.run[id]");
    actedOn = card ? card.id : null;
  });

  function keepPlace() {
    var id = actedOn;
    actedOn = null;
    var active = document.activeElement;
    if (!id || (active && active !== document.body)) return;
    var summary = document.querySelector("#" + id + " > details > summary");
    if (summary) summary.focus();
  }

  /* -- what a refresh keeps: open boxes, the filter ------------------------ */

  var openState = {};
  document.addEventListener("toggle", function (event) {
    var box = event.target;
    if (box.tagName === "DETAILS" && box.id) openState[box.id] = box.open;
  }, true);

  function restoreOpenState(root) {
    root.querySelectorAll("details[id]").forEach(function (box) {
      if (Object.prototype.hasOwnProperty.call(openState, box.id) &&
          box.open !== openState[box.id]) {
        box.open = openState[box.id];
      }
    });
  }

  var filter = document.getElementById("task-filter");

  function applyFilter() {
    if (!filter) return;
    var query = filter.value.trim().toLowerCase();
    var region = document.getElementById("tasks-region");
    if (!region) return;
    var shown = 0;
    region.querySelectorAll(".task-entry[data-task-name]").forEach(function (entry) {
      var match = entry.getAttribute("data-task-name").toLowerCase().indexOf(query) !== -1;
      entry.hidden = !match;
      if (match) shown += 1;
    });
    region.querySelectorAll("section").forEach(function (section) {
      var entries = section.querySelectorAll(".task-entry");
      if (!entries.length) return;
      section.hidden = !section.querySelector(".task-entry:not([hidden])");
    });
    var empty = region.querySelector(".filter-empty");
    if (empty) empty.hidden = shown > 0 || !query;
  }

  if (filter) {
    filter.addEventListener("input", applyFilter);
    applyFilter();
  }

  /* -- telling screen readers what changed --------------------------------- */

  var announcer = document.getElementById("announcer");
  var known = {};

  /* The words come from the page, in its language: the announcer's data-
     attributes hold sentences with {run}, {status} and {progress} to fill in,
     and each status as said. English when an attribute is missing. */
  function words(name, fallback) {
    var text = announcer && announcer.getAttribute(name);
    return text || fallback;
  }

  var statusWords = {};
  try {
    statusWords = JSON.parse(words("data-statuses", "{}")) || {};
  } catch (error) {
    statusWords = {};
  }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (whole, key) {
      return Object.prototype.hasOwnProperty.call(values, key) ? values[key] : whole;
    });
  }

  function describe(card) {
    var title = card.querySelector(".run-title");
    var id = card.getAttribute("data-run-id");
    var name = title ? title.textContent.trim() : fill(words("data-run-name", "Run #{id}"), { id: id });
    var status = card.getAttribute("data-status");
    var said = Object.prototype.hasOwnProperty.call(statusWords, status) ? statusWords[status] : status;
    var text = card.querySelector(".progress-text");
    if (!text) return fill(words("data-news", "{run}: {status}"), { run: name, status: said });
    return fill(words("data-news-progress", "{run}: {status}. {progress}"),
      { run: name, status: said, progress: text.textContent.trim() });
  }

  function survey(root, speak) {
    var news = [];
    root.querySelectorAll("article.run[data-run-id]").forEach(function (card) {
      var id = card.getAttribute("data-run-id");
      var status = card.getAttribute("data-status");
      var percent = parseFloat(card.getAttribute("data-percent"));
      var step = isNaN(percent) ? -1 : Math.floor(percent / 25);
      var before = known[id];
      known[id] = { status: status, step: step };
      if (!speak || !before) return;
      if (before.status !== status || (before.step !== step && ACTIVE.indexOf(status) !== -1)) {
        news.push(describe(card));
      }
    });
    if (speak && news.length && announcer) announcer.textContent = news.join(" ");
  }

  survey(document, false);

  on(["htmx:afterSettle", "htmx:after:settle"], function (event) {
    var root = (event.detail && event.detail.elt) || document;
    var target = root.isConnected ? root : document;
    restoreOpenState(document);
    keepPlace();
    applyFilter();
    survey(target.closest ? (target.closest(".region") || document) : document, true);
  });

  /* -- one click, one run -------------------------------------------------- */

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches("form[data-once]")) return;
    if (form.getAttribute("data-submitted")) {
      event.preventDefault();
      return;
    }
    form.setAttribute("data-submitted", "true");
    window.setTimeout(function () {
      form.querySelectorAll("button[type=submit]:not([disabled])").forEach(function (button) {
        button.disabled = true;
        button.setAttribute("data-once-disabled", "true");
      });
    }, 0);
  });

  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-once][data-submitted]").forEach(function (form) {
      form.removeAttribute("data-submitted");
      form.querySelectorAll("button[data-once-disabled]").forEach(function (button) {
        button.disabled = false;
        button.removeAttribute("data-once-disabled");
      });
    });
  });
})();
