// onair chat replay panel on a VOD page: mounts in <div id="chat" data-mode="replay">, reads
// the replay settings from <script id="onair-config"> (`replay`: channel, started_ms, …),
// takes the media timeline from the playlist the player loaded (its PROGRAM-DATE-TIMEs; the
// stream's started_ms when it has none) and, four times a second and on every seek, pause and
// play, shows what replay.js says is visible at the video's current time. Read-only: no input.
// Text is always set with textContent, never parsed as HTML. State: window.onairReplay.
(function () {
  "use strict";

  var root = document.getElementById("chat");
  var configNode = document.getElementById("onair-config");
  if (!root || root.dataset.mode !== "replay" || !configNode || !window.OnairReplay) {
    return;
  }
  var settings = JSON.parse(configNode.textContent).replay;
  var video = document.getElementById("video");
  if (!settings || !video) {
    return;
  }
  var Replay = window.OnairReplay.Replay;
  var Timeline = window.OnairReplay.Timeline;
  var TICK_MS = 250;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  root.textContent = "";
  root.classList.add("chat-replay");
  var header = el("div", "chat-replay-header");
  header.appendChild(el("h2", "chat-replay-title", "Chat replay"));
  header.appendChild(el("span", "chat-replay-note", "as it was sent during the stream"));
  var log = el("ul", "chat-log");
  log.setAttribute("aria-live", "polite");
  var status = el("div", "chat-status", "loading the chat…");
  root.appendChild(header);
  root.appendChild(log);
  root.appendChild(status);

  var replay = new Replay({
    startedMs: settings.started_ms,
    fetchPage: function (since, until, limit) {
      var url = "/api/chat/" + encodeURIComponent(settings.channel) +
        "?since=" + since + "&until=" + until + "&limit=" + limit;
      return fetch(url, { headers: { Accept: "application/json" } }).then(function (response) {
        if (!response.ok) {
          throw new Error("chat history answered " + response.status);
        }
        return response.json();
      });
    },
    onChange: function () { tick(); },
  });

  var state = {
    channel: settings.channel,
    ready: false, // the media timeline is known
    origin: null, // "playlist" (PROGRAM-DATE-TIME) | "started_ms"
    runs: null, // the timeline's runs: [{startS, endS, wallMs}]
    shown: [], // ids on screen, oldest first
    replay: replay,
    settled: function () {
      return state.ready && replay.settled(video.currentTime);
    },
  };
  window.onairReplay = state;

  // ---- the media timeline --------------------------------------------------------------------

  function fromStartedMs(durationS) {
    if (!(settings.started_ms > 0)) {
      return null;
    }
    var duration = isFinite(durationS) && durationS > 0 ? durationS : settings.duration_ms / 1000;
    return { timeline: Timeline.fromOrigin(settings.started_ms, duration), origin: "started_ms" };
  }

  function findTimeline() {
    var player = window.onairPlayer;
    if (!player) {
      return null;
    }
    if (player.hls) {
      var levels = player.hls.levels || [];
      for (var i = 0; i < levels.length; i++) {
        var details = levels[i].details;
        if (details && details.fragments && details.fragments.length) {
          var timeline = Timeline.fromFragments(details.fragments);
          return timeline
            ? { timeline: timeline, origin: "playlist" }
            : fromStartedMs(details.totalduration);
        }
      }
      return null; // no media playlist loaded yet
    }
    if (player.mode === "native" && video.readyState >= 1) {
      var start = typeof video.getStartDate === "function" ? video.getStartDate() : null;
      var startMs = start ? start.getTime() : NaN;
      if (isFinite(startMs) && isFinite(video.duration)) {
        return { timeline: Timeline.fromOrigin(startMs, video.duration), origin: "playlist" };
      }
      return fromStartedMs(video.duration);
    }
    return null;
  }

  // ---- the panel -----------------------------------------------------------------------------

  function userColor(name) {
    var hash = 0;
    for (var i = 0; i < name.length; i++) {
      hash = (hash * 31 + name.charCodeAt(i)) | 0;
    }
    return "hsl(" + (Math.abs(hash) % 360) + ", 70%, 65%)";
  }

  function clock(seconds) {
    var s = Math.floor(seconds);
    var text = Math.floor(s / 60) % 60 + ":" + String(s % 60).padStart(2, "0");
    return s >= 3600 ? Math.floor(s / 3600) + ":" + text.padStart(5, "0") : text;
  }

  function line(message) {
    var item = el("li", "chat-line");
    item.dataset.id = message.id;
    item.dataset.user = message.user;
    item.dataset.at = message.at.toFixed(3);
    item.title = new Date(message.ts).toLocaleString();
    item.appendChild(el("span", "chat-time", clock(message.at)));
    var who = el("span", "chat-user", message.user);
    who.style.color = userColor(message.user);
    item.appendChild(who);
    item.appendChild(document.createTextNode(": "));
    item.appendChild(el("span", "chat-text", message.text));
    return item;
  }

  // Shows `messages` (oldest first): while playing that is the lines on screen minus some of
  // the oldest plus new ones at the bottom; after a seek it is drawn anew.
  function show(messages) {
    var ids = messages.map(function (m) { return m.id; });
    var old = state.shown;
    var cut = ids.length ? old.indexOf(ids[0]) : old.length;
    var keeps = cut >= 0;
    for (var i = 0; keeps && cut + i < old.length; i++) {
      keeps = old[cut + i] === ids[i];
    }
    var stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    if (keeps) {
      for (var drop = 0; drop < cut; drop++) {
        log.removeChild(log.firstChild);
      }
      messages.slice(old.length - cut).forEach(function (m) { log.appendChild(line(m)); });
    } else {
      log.replaceChildren.apply(log, messages.map(line));
      stick = true;
    }
    if (stick) {
      log.scrollTop = log.scrollHeight;
    }
    state.shown = ids;
  }

  function tick() {
    if (!state.ready) {
      var found = findTimeline();
      if (!found) {
        return;
      }
      state.ready = true;
      state.origin = found.origin;
      state.runs = found.timeline.runs;
      replay.setTimeline(found.timeline);
    }
    var messages = replay.update(video.currentTime);
    if (messages.length !== state.shown.length ||
        messages.some(function (m, i) { return m.id !== state.shown[i]; })) {
      show(messages);
    }
    var here = replay.windows[replay.windowOf(video.currentTime)];
    if (here && here.state === "failed") {
      status.textContent = "chat history is unavailable; retrying…";
    } else if (!here || here.state !== "loaded") {
      status.textContent = "loading the chat…";
    } else {
      status.textContent = messages.length ? "" : "no chat yet at this point";
    }
  }

  ["timeupdate", "seeking", "seeked", "pause", "play", "loadedmetadata"].forEach(function (name) {
    video.addEventListener(name, tick);
  });
  setInterval(tick, TICK_MS);
  tick();
})();
