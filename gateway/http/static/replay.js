// onair chat replay, the pure part: where each chat message falls on a VOD's media timeline,
// which windows of chat to fetch from the history API as playback moves, and which messages
// the panel shows at a position. No DOM and no clock of its own (chat_replay.js drives it;
// tests/unit/http/test_replay_js.py runs it under node).
//
// Loaded as a classic script it defines window.OnairReplay; under node, module.exports:
//   OnairReplay.Timeline   wall clock (ms since the epoch) <-> media time (s), run by run:
//                          media time 0 is the playlist's first PROGRAM-DATE-TIME, each run
//                          after a discontinuity starts at its own (what the VOD worker writes,
//                          and what workers/vod/timeline.py's wall_at / offset_of_wall compute)
//   OnairReplay.Replay     the schedule: the media timeline is cut into windows of WINDOW_S;
//                          at position p it wants p's window, the one before it (the backlog
//                          the panel shows) and the one after (prefetch), each fetched as
//                          `since..until` pages of the history API, deduplicated by id. The
//                          panel shows the newest MAX_LINES messages with offset <= p among the
//                          windows loaded without a hole down to p's.
(function (root, factory) {
  "use strict";
  var api = factory();
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  } else {
    root.OnairReplay = api;
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  var WINDOW_S = 30; // media seconds of chat one window covers
  var MAX_LINES = 150; // lines the panel shows, newest last
  var PAGE_LIMIT = 1000; // messages per history request (the API's maximum)
  var MAX_INFLIGHT = 2; // windows fetched at once
  var KEEP_WINDOWS = 12; // windows kept in memory; the farthest from the position go first
  var RETRY_MIN_MS = 2000; // a failed window is asked again after this, doubling...
  var RETRY_MAX_MS = 30000; // ...up to this
  var LEAD_MAX_MS = 5 * 60 * 1000; // chat from going live up to this long before the first
  //                                  frame is shown at 0
  var JUMP_MS = 250; // a fragment whose date-time is off by more than this opens a new run

  // ---- Timeline ------------------------------------------------------------------------------

  // runs: [{startS, endS, wallMs}], in media order: media time s in [startS, endS] is wall
  // time wallMs + (s - startS) * 1000.
  function Timeline(runs) {
    if (!runs || !runs.length) {
      throw new Error("a timeline needs at least one run");
    }
    this.runs = runs.map(function (run) {
      return { startS: run.startS, endS: run.endS, wallMs: run.wallMs };
    });
    this.durationS = this.runs[this.runs.length - 1].endS;
  }

  // One run: a playlist without discontinuities, or without date-times (origin = started_ms).
  Timeline.fromOrigin = function (originMs, durationS) {
    return new Timeline([{ startS: 0, endS: Math.max(0, durationS), wallMs: originMs }]);
  };

  // From hls.js's fragments of one level (playlistOffset or start, duration in s;
  // programDateTime in ms, which hls.js carries forward from the last
  // EXT-X-PROGRAM-DATE-TIME; cc the discontinuity count). null when a fragment has no
  // date-time. The places are the playlist's (the sum of the EXTINFs before a segment, as
  // RFC 8216 dates them and as a native player's getStartDate() + currentTime does): hls.js
  // moves `start` and `duration` to the parsed PTS of each fragment it has loaded (after a
  // discontinuity that can be tens of ms off the playlist), so a timeline read from them
  // would depend on which fragments happened to be loaded when it was read.
  function playlistStart(frag) {
    var offset = frag.playlistOffset;
    return typeof offset === "number" && isFinite(offset) ? offset : frag.start;
  }

  // The EXTINF duration (hls.js keeps the tag in tagList; `duration` is rewritten on load).
  function listedDuration(frag) {
    var tags = frag.tagList || [];
    for (var i = 0; i < tags.length; i++) {
      if (tags[i][0] === "INF") {
        var duration = parseFloat(tags[i][1]);
        if (isFinite(duration)) {
          return duration;
        }
      }
    }
    return frag.duration;
  }

  Timeline.fromFragments = function (fragments) {
    var runs = [];
    var lastCc = null;
    for (var i = 0; i < fragments.length; i++) {
      var frag = fragments[i];
      var wall = frag.programDateTime;
      if (typeof wall !== "number" || !isFinite(wall)) {
        return null;
      }
      var start = playlistStart(frag);
      var next = fragments[i + 1];
      var end = next ? playlistStart(next) : start + listedDuration(frag);
      var run = runs[runs.length - 1];
      var cc = frag.cc === undefined ? null : frag.cc;
      var continues = run && cc === lastCc &&
        Math.abs(run.wallMs + (start - run.startS) * 1000 - wall) <= JUMP_MS;
      if (continues) {
        run.endS = end;
      } else {
        runs.push({ startS: start, endS: end, wallMs: wall });
      }
      lastCc = cc;
    }
    return runs.length ? new Timeline(runs) : null;
  };

  Timeline.prototype.endWallMs = function (run) {
    return run.wallMs + (run.endS - run.startS) * 1000;
  };

  // The playlist's date-time at media time s (what a player computes).
  Timeline.prototype.wallAt = function (s) {
    var runs = this.runs;
    var low = 0;
    var high = runs.length - 1;
    while (low < high) {
      var middle = (low + high + 1) >> 1;
      if (runs[middle].startS <= s) {
        low = middle;
      } else {
        high = middle - 1;
      }
    }
    var run = runs[low];
    var within = Math.min(Math.max(s, run.startS), run.endS);
    return run.wallMs + (within - run.startS) * 1000;
  };

  // Where wall time ts falls on the media timeline (s): inside a run, its place there; before
  // a run (before the first frame, or while the streamer was away), that run's start; after
  // the last, the end.
  Timeline.prototype.mediaOf = function (ts) {
    var runs = this.runs;
    var low = 0;
    var high = runs.length;
    while (low < high) { // the first run that ends after ts
      var middle = (low + high) >> 1;
      if (this.endWallMs(runs[middle]) > ts) {
        high = middle;
      } else {
        low = middle + 1;
      }
    }
    if (low === runs.length) {
      return this.durationS;
    }
    var run = runs[low];
    return ts < run.wallMs ? run.startS : run.startS + (ts - run.wallMs) / 1000;
  };

  // ---- Replay --------------------------------------------------------------------------------

  // options: fetchPage(sinceMs, untilMs, limit) -> Promise of a history page
  //          ({messages, more, next_since}, docs/chat.md); onChange() after a window lands or
  //          fails; now() (ms, for retries); startedMs (the stream went live); windowS,
  //          maxLines, pageLimit, keepWindows, maxInflight to override the defaults.
  function Replay(options) {
    this.fetchPage = options.fetchPage;
    this.onChange = options.onChange || function () {};
    this.now = options.now || function () { return Date.now(); };
    this.startedMs = options.startedMs || 0;
    this.windowS = options.windowS || WINDOW_S;
    this.maxLines = options.maxLines || MAX_LINES;
    this.pageLimit = options.pageLimit || PAGE_LIMIT;
    this.keepWindows = Math.max(3, options.keepWindows || KEEP_WINDOWS);
    this.maxInflight = options.maxInflight || MAX_INFLIGHT;
    this.timeline = null;
    this.positionS = 0;
    this.generation = 0;
    this.fetches = 0; // history requests made
    this.reset();
  }

  Replay.prototype.reset = function () {
    this.generation += 1; // fetches of an older generation are ignored when they land
    this.windows = {}; // index -> {state: "loading" | "loaded" | "failed", failures, retryAt}
    this.inflight = 0;
    this.byId = {};
    this.messages = []; // {id, user, text, ts, at, win, seq}, by ts then arrival
    this.seq = 0;
  };

  // Fetching starts at the first update(): the position may not be 0.
  Replay.prototype.setTimeline = function (timeline) {
    this.timeline = timeline;
    this.reset();
  };

  Replay.prototype.windowCount = function () {
    return Math.max(1, Math.ceil(this.timeline.durationS / this.windowS - 1e-9));
  };

  Replay.prototype.windowOf = function (s) {
    var index = Math.floor(Math.max(0, s) / this.windowS);
    return Math.min(index, this.windowCount() - 1);
  };

  // The wall-clock range (ms, both inclusive) window k asks for: the windows' ranges tile
  // the stream without overlap.
  Replay.prototype.range = function (k) {
    var timeline = this.timeline;
    var since = Math.floor(timeline.wallAt(k * this.windowS));
    if (k === 0 && this.startedMs > 0 && this.startedMs < since &&
        since - this.startedMs <= LEAD_MAX_MS) {
      since = this.startedMs;
    }
    var until = k === this.windowCount() - 1
      ? Math.floor(timeline.wallAt(timeline.durationS))
      : Math.floor(timeline.wallAt((k + 1) * this.windowS)) - 1;
    return { since: since, until: until };
  };

  // The windows position s needs, most urgent first: its own, the backlog, the next one.
  Replay.prototype.needed = function (s) {
    var k = this.windowOf(s);
    var count = this.windowCount();
    return [k, k - 1, k + 1].filter(function (i) { return i >= 0 && i < count; });
  };

  Replay.prototype.loaded = function (k) {
    var w = this.windows[k];
    return !!w && w.state === "loaded";
  };

  // Every window the position needs is loaded: what the panel shows is final for it.
  Replay.prototype.settled = function (s) {
    if (!this.timeline) {
      return false;
    }
    var self = this;
    return this.needed(s === undefined ? this.positionS : s).every(function (k) {
      return self.loaded(k);
    });
  };

  Replay.prototype.pump = function () {
    if (!this.timeline) {
      return;
    }
    var wanted = this.needed(this.positionS);
    for (var i = 0; i < wanted.length && this.inflight < this.maxInflight; i++) {
      var w = this.windows[wanted[i]];
      if (!w || (w.state === "failed" && this.now() >= w.retryAt)) {
        this.load(wanted[i]);
      }
    }
  };

  Replay.prototype.load = function (k) {
    var self = this;
    var generation = this.generation;
    var range = this.range(k);
    var previous = this.windows[k];
    var w = { state: "loading", failures: previous ? previous.failures : 0, retryAt: 0 };
    this.windows[k] = w;
    this.inflight += 1;
    var found = [];

    function page(since) {
      self.fetches += 1;
      return Promise.resolve(self.fetchPage(since, range.until, self.pageLimit))
        .then(function (answer) {
          if (generation !== self.generation) {
            return null;
          }
          if (!answer || !Array.isArray(answer.messages)) {
            throw new Error("not a history page");
          }
          found = found.concat(answer.messages);
          var next = answer.next_since;
          if (answer.more && typeof next === "number") {
            next = next > since ? next : since + 1; // never ask the same page twice
            if (next <= range.until) {
              return page(next);
            }
          }
          return null;
        });
    }

    page(range.since).then(
      function () {
        if (generation !== self.generation) {
          return;
        }
        self.inflight -= 1;
        w.state = "loaded";
        w.failures = 0;
        self.add(found, k);
        self.evict();
        self.pump();
        self.onChange();
      },
      function () {
        if (generation !== self.generation) {
          return;
        }
        self.inflight -= 1;
        w.state = "failed";
        w.failures += 1;
        w.retryAt = self.now() +
          Math.min(RETRY_MAX_MS, RETRY_MIN_MS * Math.pow(2, w.failures - 1));
        self.pump();
        self.onChange();
      },
    );
  };

  Replay.prototype.add = function (messages, k) {
    var timeline = this.timeline;
    for (var i = 0; i < messages.length; i++) {
      var m = messages[i];
      if (!m || typeof m.id !== "string" || typeof m.ts !== "number" || this.byId[m.id]) {
        continue;
      }
      var entry = {
        id: m.id,
        user: String(m.user),
        text: String(m.text),
        ts: m.ts,
        at: timeline.mediaOf(m.ts),
        win: k,
        seq: this.seq++,
      };
      this.byId[m.id] = entry;
      this.messages.push(entry);
    }
    this.messages.sort(function (a, b) { return a.ts - b.ts || a.seq - b.seq; });
  };

  // Keep at most keepWindows windows: drop the loaded ones farthest from the position.
  Replay.prototype.evict = function () {
    var self = this;
    var keep = this.needed(this.positionS);
    var here = this.windowOf(this.positionS);
    var loaded = Object.keys(this.windows).map(Number).filter(function (k) {
      return self.windows[k].state === "loaded" && keep.indexOf(k) < 0;
    });
    var excess = loaded.length + keep.length - this.keepWindows;
    if (excess <= 0) {
      return;
    }
    loaded.sort(function (a, b) { return Math.abs(b - here) - Math.abs(a - here); });
    var gone = {};
    loaded.slice(0, excess).forEach(function (k) {
      gone[k] = true;
      delete self.windows[k];
    });
    this.messages = this.messages.filter(function (m) {
      if (gone[m.win]) {
        delete self.byId[m.id];
        return false;
      }
      return true;
    });
  };

  // What the panel shows at media time s: the newest maxLines messages at or before s, from
  // the windows loaded without a hole down to s's window (one never shows messages from
  // before a stretch of chat that is not loaded).
  Replay.prototype.visible = function (s) {
    if (!this.timeline) {
      return [];
    }
    var k = this.windowOf(s);
    var j = k;
    while (j > 0 && this.loaded(j - 1)) {
      j -= 1;
    }
    var list = this.messages;
    var low = 0;
    var high = list.length;
    while (low < high) { // the first message after s
      var middle = (low + high) >> 1;
      if (list[middle].at <= s) {
        low = middle + 1;
      } else {
        high = middle;
      }
    }
    var shown = [];
    for (var i = low - 1; i >= 0 && shown.length < this.maxLines; i--) {
      var m = list[i];
      if (m.win < j) {
        break;
      }
      if (m.win <= k + 1) {
        shown.push(m);
      }
    }
    return shown.reverse();
  };

  // Move to media time s (playing, paused, or just seeked): start what needs fetching and
  // return what the panel shows there.
  Replay.prototype.update = function (s) {
    this.positionS = Math.max(0, s || 0);
    this.pump();
    return this.visible(this.positionS);
  };

  return {
    Timeline: Timeline,
    Replay: Replay,
    WINDOW_S: WINDOW_S,
    MAX_LINES: MAX_LINES,
  };
});
