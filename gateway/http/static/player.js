// onair player: hls.js where Media Source Extensions exist, the browser's own HLS otherwise
// (Safari). Reads its settings from <script id="onair-config">; exposes its state as
// window.onairPlayer for the chat panel and for tests. hls.js picks levels with onair's
// controller (abr.js); `?abr=hlsjs` keeps hls.js's default for comparison. `?stats=1` (or
// the Stats button) shows the rung, bandwidth estimate, buffer and latency. When the page's
// config says `lowLatency`, hls.js plays the LL-HLS playlists in low-latency mode (blocking
// reloads, parts, preload hints) and the page catches up by playing up to 20 % faster while
// it is behind hls.js's target latency, keeping three parts buffered (abr.js catchUpRate;
// hls.js's own catch-up needs more than a second buffered); Safari plays the same playlists
// natively. The LIVE badge shows the current latency.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("onair-config").textContent);
  var video = document.getElementById("video");
  var select = document.getElementById("quality");
  var current = document.getElementById("current-level");
  var liveButton = document.getElementById("live-edge");
  var statusBox = document.getElementById("status");
  var statsBox = document.getElementById("stats");
  var statsToggle = document.getElementById("stats-toggle");
  var OFFLINE_RETRY_MS = 5000;
  var STATS_EVERY_MS = 500;
  var query = new URLSearchParams(window.location.search);
  var abrMode = query.get("abr") === "hlsjs" || !window.OnairAbr ? "hlsjs" : "onair";

  var state = {
    config: config,
    mode: "none", // "hls.js" | "native" | "none"
    hls: null,
    levels: [], // [{index, name, height, bitrate}]
    currentLevel: -1,
    autoLevel: true,
    atLiveEdge: false,
    heldBack: false, // the viewer paused or seeked back: catch-up leaves them where they are
    abr: abrMode, // "onair" | "hlsjs"
    stats: null, // {abr, level, levelName, bandwidthBps, bufferS, latencyS, targetLatencyS}
  };
  window.onairPlayer = state;

  function showStatus(text) {
    statusBox.textContent = text;
    statusBox.hidden = false;
  }

  function hideStatus() {
    statusBox.hidden = true;
  }

  function levelName(level) {
    var name = level.height ? level.height + "p" : Math.round(level.bitrate / 1000) + " kbps";
    if (level.frameRate && level.frameRate > 30.5) {
      name += Math.round(level.frameRate);
    }
    return name;
  }

  function fillLevels(levels) {
    state.levels = levels.map(function (level, index) {
      return { index: index, name: levelName(level), height: level.height, bitrate: level.bitrate };
    });
    while (select.options.length > 1) {
      select.remove(1);
    }
    state.levels
      .slice()
      .sort(function (a, b) { return b.bitrate - a.bitrate; })
      .forEach(function (level) {
        var option = document.createElement("option");
        option.value = String(level.index);
        option.textContent = level.name;
        select.appendChild(option);
      });
    select.value = "-1";
    select.disabled = state.levels.length < 2;
  }

  function showCurrentLevel() {
    var hls = state.hls;
    if (!hls) {
      current.textContent = state.mode === "native" ? "Auto" : "";
      return;
    }
    state.autoLevel = hls.autoLevelEnabled;
    var level = state.levels[state.currentLevel];
    var name = level ? level.name : "…";
    current.textContent = state.autoLevel ? "Auto (" + name + ")" : name;
    current.dataset.level = String(state.currentLevel);
  }

  select.addEventListener("change", function () {
    if (!state.hls) {
      return;
    }
    // -1 re-enables automatic selection; a level index pins that level now.
    state.hls.currentLevel = Number(select.value);
    showCurrentLevel();
  });

  function liveEdge() {
    if (state.hls) {
      return state.hls.liveSyncPosition;
    }
    if (video.seekable && video.seekable.length) {
      return video.seekable.end(video.seekable.length - 1);
    }
    return null;
  }

  function targetDuration() {
    var hls = state.hls;
    var level = hls && hls.levels[hls.currentLevel >= 0 ? hls.currentLevel : 0];
    return (level && level.details && level.details.targetduration) || 2;
  }

  function updateLiveEdge() {
    var live = config.kind === "live";
    if (state.hls) {
      var level = state.hls.levels[state.currentLevel >= 0 ? state.currentLevel : 0];
      live = !!(level && level.details && level.details.live);
    }
    var edge = live ? liveEdge() : null;
    if (edge === null || edge === undefined || !isFinite(edge)) {
      liveButton.hidden = true;
      state.atLiveEdge = false;
      return;
    }
    var behind = edge - video.currentTime;
    state.atLiveEdge = behind <= targetDuration() + 0.5;
    liveButton.hidden = false;
    liveButton.dataset.atEdge = String(state.atLiveEdge);
    var latency = state.hls && state.hls.latency > 0 ? state.hls.latency : null;
    state.latencyS = latency;
    liveButton.textContent = state.atLiveEdge
      ? "LIVE" + (latency !== null ? " · " + latency.toFixed(1) + " s" : "")
      : "GO LIVE";
  }

  liveButton.addEventListener("click", function () {
    var edge = liveEdge();
    if (edge !== null && edge !== undefined && isFinite(edge)) {
      video.currentTime = edge;
    }
    state.heldBack = false;
    video.play().catch(function () {});
  });
  video.addEventListener("timeupdate", updateLiveEdge);

  // Behind the live edge on purpose: a pause, or a seek backwards (hls.js itself only ever
  // seeks forwards: to its start position, over a gap, back to live).
  var playedTo = 0;
  video.addEventListener("pause", function () {
    state.heldBack = true;
  });
  video.addEventListener("seeking", function () {
    if (video.currentTime < playedTo - 0.5) {
      state.heldBack = true;
    }
  });
  video.addEventListener("timeupdate", function () {
    if (!video.seeking) {
      playedTo = video.currentTime;
    }
  });

  // Low latency: play slightly faster while behind the target latency (abr.js catchUpRate).
  function catchUp() {
    var hls = state.hls;
    var details = hls && hls.latestLevelDetails;
    if (!config.lowLatency || !hls || !window.OnairAbr || !details || !details.live ||
        video.paused || video.playbackRate === 0) {
      return;
    }
    var targetS = hls.targetLatency || 0;
    var segmentS = details.targetduration || 0;
    if (state.heldBack && hls.latency > 0 && hls.latency - targetS <= targetS + segmentS) {
      state.heldBack = false; // back near the live edge: a stall from here is caught up
    }
    var rate = window.OnairAbr.catchUpRate(hls.latency, targetS, bufferAhead(),
      details.partTarget || 0, segmentS, state.heldBack);
    if (video.playbackRate !== rate) {
      video.playbackRate = rate;
    }
  }
  video.addEventListener("timeupdate", catchUp);
  setInterval(updateLiveEdge, 1000);

  function play() {
    video.play().catch(function () {
      showStatus("Press play to start");
    });
  }

  video.addEventListener("playing", hideStatus);

  function hlsConfig() {
    var options = config.lowLatency
      ? {
        lowLatencyMode: true,
        // with 30 s, every bench.glass run (5 of 5) froze once for ~5 s at a segment break
        // 35-57 s in: hls.js loaded the new segment's playlists but never its first part
        // (hls.js's own default is Infinity, its demo's 90); with 90: none in 3 runs, 130 s
        backBufferLength: 90,
        // onair's catch-up (catchUp above, abr.js catchUpRate) sets the playback rate; hls.js's
        // own needs more than 1 s buffered, which a 0.6 s PART-HOLD-BACK never leaves
        maxLiveSyncPlaybackRate: window.OnairAbr ? 1 : 1.1,
        // under half a 0.2 s part: hls.js's 0.25 s default is longer than a part (hls.js
        // issue 5028: parts skipped at a segment break with 0.25 s parts)
        maxFragLookUpTolerance: 0.05,
      }
      : { liveSyncDurationCount: 3, backBufferLength: 30 };
    if (abrMode === "onair") {
      options.abrController = window.OnairAbr.hlsAbrController(window.Hls);
      options.testBandwidth = false; // onair's controller picks the start (abr.js startLevel)
    }
    return options;
  }

  function bufferAhead() {
    var ranges = video.buffered;
    for (var i = 0; i < ranges.length; i++) {
      if (ranges.start(i) <= video.currentTime + 0.1 && video.currentTime < ranges.end(i)) {
        return ranges.end(i) - video.currentTime;
      }
    }
    return 0;
  }

  function collectStats() {
    var hls = state.hls;
    var stats = { abr: state.abr, level: -1, levelName: "", bandwidthBps: null,
      bufferS: bufferAhead(), latencyS: null, targetLatencyS: null };
    if (hls) {
      var level = state.levels[state.currentLevel];
      stats.level = state.currentLevel;
      stats.levelName = level ? level.name : "";
      var onair = hls.abrController && hls.abrController.onair;
      var estimate = state.abr === "onair" && onair ? onair.estimateBps() : hls.bandwidthEstimate;
      stats.bandwidthBps = estimate && isFinite(estimate) ? Math.round(estimate) : null;
      stats.latencyS = hls.latency > 0 ? hls.latency : null;
      stats.targetLatencyS = hls.targetLatency || null;
    } else if (config.kind === "live" && video.seekable.length) {
      stats.latencyS = video.seekable.end(video.seekable.length - 1) - video.currentTime;
    }
    return stats;
  }

  function row(term, value) {
    var dt = document.createElement("dt");
    dt.textContent = term;
    var dd = document.createElement("dd");
    dd.textContent = value;
    statsBox.append(dt, dd);
  }

  function seconds(value) {
    return value === null ? "–" : value.toFixed(1) + " s";
  }

  function updateStats() {
    var stats = collectStats();
    state.stats = stats;
    if (statsBox.hidden) {
      return;
    }
    statsBox.replaceChildren();
    row("ABR", stats.abr === "onair" ? "onair" : "hls.js default");
    row("Rung", stats.levelName ? stats.levelName + " (" + stats.level + ")" : "–");
    row("Bandwidth", stats.bandwidthBps === null ? "–"
      : (stats.bandwidthBps / 1e6).toFixed(2) + " Mb/s");
    row("Buffer", seconds(stats.bufferS));
    row("Latency", seconds(stats.latencyS) +
      (stats.targetLatencyS ? " (target " + stats.targetLatencyS.toFixed(1) + " s)" : ""));
  }

  function showStats(visible) {
    statsBox.hidden = !visible;
    statsToggle.setAttribute("aria-pressed", String(visible));
    updateStats();
  }

  statsToggle.addEventListener("click", function () {
    showStats(statsBox.hidden);
  });
  showStats(query.get("stats") === "1");
  setInterval(updateStats, STATS_EVERY_MS);

  function startHls() {
    var hls = new window.Hls(hlsConfig());
    state.hls = hls;
    state.mode = "hls.js";
    var Events = window.Hls.Events;
    var ErrorTypes = window.Hls.ErrorTypes;
    var Details = window.Hls.ErrorDetails;

    hls.on(Events.MANIFEST_PARSED, function () {
      fillLevels(hls.levels);
      showCurrentLevel();
      play();
    });
    hls.on(Events.LEVEL_SWITCHED, function (_event, data) {
      state.currentLevel = data.level;
      showCurrentLevel();
    });
    hls.on(Events.LEVEL_LOADED, function (_event, data) {
      // hls.js adds liveSyncOnStallIncrease (1 s) to its target latency for every stall,
      // for the rest of the session: one stall at the start (a rung switch outlasting a
      // 0.6 s buffer) kept bench.glass 1 s later than PART-HOLD-BACK to the end. In LL
      // mode a stall makes room for one more part instead.
      var partTarget = data.details && data.details.partTarget;
      if (config.lowLatency && partTarget > 0) {
        hls.config.liveSyncOnStallIncrease = partTarget;
      }
    });
    hls.on(Events.ERROR, function (_event, data) {
      if (!data.fatal) {
        return;
      }
      if (data.type === ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
        return;
      }
      var offline =
        data.details === Details.MANIFEST_LOAD_ERROR ||
        data.details === Details.MANIFEST_LOAD_TIMEOUT ||
        data.details === Details.MANIFEST_PARSING_ERROR;
      restart(offline ? "Offline. Waiting for the stream to start…" : "Reconnecting…");
    });
    hls.loadSource(config.src);
    hls.attachMedia(video);
  }

  function restart(message) {
    if (state.hls) {
      state.hls.destroy();
      state.hls = null;
    }
    showStatus(message);
    setTimeout(startHls, OFFLINE_RETRY_MS);
  }

  function startNative() {
    state.mode = "native";
    select.disabled = true;
    video.src = config.src;
    video.addEventListener("error", function () {
      showStatus("Offline. Waiting for the stream to start…");
      setTimeout(function () {
        video.src = config.src;
        video.load();
        play();
      }, OFFLINE_RETRY_MS);
    });
    showCurrentLevel();
    play();
  }

  if (window.Hls && window.Hls.isSupported()) {
    startHls();
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    startNative();
  } else {
    showStatus("This browser cannot play HLS.");
  }
})();
