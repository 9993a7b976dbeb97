// onair's live ABR controller in the browser: the JavaScript twin of pipeline/abr/live.py
// (same algorithm step for step; tests/unit/abr/test_parity.py runs both on the same
// sequences and compares every decision; change one, change the other). The docstring of
// live.py explains the algorithm.
//
// Loaded as a classic script it defines window.OnairAbr; under node, module.exports:
//   OnairAbr.LiveAbrController   the pure controller (no clock, no DOM)
//   OnairAbr.hlsAbrController(Hls)  a subclass of hls.js's AbrController that lets the
//                                   controller pick every fragment's level and abandon a
//                                   fragment that loads too slowly (for `abrController`).
//   OnairAbr.catchUpRate(...)       the playback rate that brings a low-latency player back
//                                   to its target latency (player.js applies it).
(function (root, factory) {
  "use strict";
  var api = factory();
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  } else {
    root.OnairAbr = api;
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  var LONG_WINDOW_S = 8.0; // media seconds of samples in the long harmonic mean
  var SHORT_WINDOW_S = 2.0; // ...and in the short one
  var ERROR_WINDOW = 5; // chunks whose estimate errors the discount looks back over
  var HORIZON = 5; // chunks each rung's plan looks ahead...
  var HORIZON_S = 4.0; // ...and at least this much media, however short the chunks (LL parts)
  var STALL_WEIGHT = 4.3; // QoE lost per second of stall
  var SWITCH_WEIGHT = 1.0; // QoE lost per Mbps of switch
  var UP_SHARE = 1.0; // going up needs the rung's fetch time within this share of a chunk
  var UP_HOLD_S = 4.0; // media seconds the plan must stay above the current rung to go up
  var DOWN_HOLD_S = 8.0; // no up-switch within this many media seconds of a down-switch
  var MIN_TRANSFER_S = 0.01; // a transfer measured shorter than this counts as this long
  var ABANDON_AFTER_SHARE = 0.25; // abandon checks start once this share of D has elapsed
  var SWITCH_FETCHES = 3; // an up-switch fetches the rung's playlist, init and chunk in turn

  function LiveAbrController(bitratesBps, options) {
    var sorted = bitratesBps.slice().sort(function (a, b) { return a - b; });
    var ascending = bitratesBps.length > 0 && bitratesBps[0] > 0 &&
      bitratesBps.every(function (b, i) { return b === sorted[i]; });
    if (!ascending) {
      throw new Error("bitratesBps must be positive, ascending and not empty");
    }
    if (!(options.chunkS > 0) || !(options.targetLatencyS > 0)) {
      throw new Error("chunkS and targetLatencyS must be positive");
    }
    this.bitratesBps = bitratesBps.map(Number);
    this.chunkS = options.chunkS;
    this.targetLatencyS = options.targetLatencyS;
    var start = options.startLevel || 0;
    this.level = Math.min(Math.max(start, 0), this.bitratesBps.length - 1);
    // LL-HLS: a rung's playlist is asked for its next chunk and waits until it exists
    this.blockingReload = !!options.blockingReload;
    this.samples = []; // {bits, transferS, ttfbS, mediaS, error}, oldest first
    this.switchedDown = false;
    this.upHeldS = 0.0;
    this.sinceDownS = DOWN_HOLD_S;
  }

  function rateBps(sample) {
    return sample.bits / sample.transferS;
  }

  LiveAbrController.prototype.addSample = function (sizeBytes, durationS, ttfbS) {
    ttfbS = ttfbS || 0.0;
    if (sizeBytes <= 0 || durationS <= 0) {
      return;
    }
    ttfbS = Math.min(Math.max(ttfbS, 0.0), durationS);
    var transferS = Math.max(durationS - ttfbS, MIN_TRANSFER_S);
    var bits = sizeBytes * 8.0;
    var rate = bits / transferS;
    var predicted = this.estimateBps();
    var error = predicted === null ? 0.0 : Math.abs(predicted - rate) / rate;
    this.samples.push({ bits: bits, transferS: transferS, ttfbS: ttfbS, mediaS: this.chunkS,
      error: error });
    var keptS = 0.0;
    for (var index = this.samples.length - 1; index >= 0; index--) {
      keptS += this.samples[index].mediaS;
      if (keptS >= LONG_WINDOW_S && this.samples.length - index >= ERROR_WINDOW) {
        this.samples.splice(0, index);
        break;
      }
    }
  };

  LiveAbrController.prototype.harmonicBps = function (windowS) {
    var weight = 0.0;
    var inverse = 0.0;
    for (var index = this.samples.length - 1; index >= 0; index--) {
      var sample = this.samples[index];
      weight += sample.mediaS;
      inverse += sample.mediaS / rateBps(sample);
      if (weight >= windowS) {
        break;
      }
    }
    return weight / inverse;
  };

  LiveAbrController.prototype.estimateBps = function () {
    if (!this.samples.length) {
      return null;
    }
    return Math.min(this.harmonicBps(LONG_WINDOW_S), this.harmonicBps(SHORT_WINDOW_S));
  };

  LiveAbrController.prototype.safeBps = function () {
    var estimate = this.estimateBps();
    if (estimate === null) {
      return null;
    }
    var worst = 0.0;
    var recent = this.samples.slice(-ERROR_WINDOW);
    for (var i = 0; i < recent.length; i++) {
      worst = Math.max(worst, recent[i].error);
    }
    return estimate / (1.0 + worst);
  };

  LiveAbrController.prototype.rttS = function () {
    if (!this.samples.length) {
      return 0.0;
    }
    var total = 0.0;
    for (var i = 0; i < this.samples.length; i++) {
      total += this.samples[i].ttfbS;
    }
    return total / this.samples.length;
  };

  LiveAbrController.prototype.roomS = function (latencyS) {
    return Math.max(Math.min(latencyS, this.targetLatencyS) - this.chunkS / 2, this.chunkS);
  };

  LiveAbrController.prototype.planValue = function (level, throughputBps, rttS, bufferS, roomS) {
    var fetchS = rttS + this.bitratesBps[level] * this.chunkS / throughputBps;
    var mbps = this.bitratesBps[level] / 1e6;
    var value = -SWITCH_WEIGHT * Math.abs(mbps - this.bitratesBps[this.level] / 1e6);
    var buffer = bufferS;
    var steps = Math.max(HORIZON, Math.floor(HORIZON_S / this.chunkS + 1e-9));
    for (var step = 0; step < steps; step++) {
      var stall = Math.max(fetchS - buffer, 0.0);
      buffer = Math.min(Math.max(buffer - fetchS, 0.0) + this.chunkS, roomS);
      value += mbps * this.chunkS / 2.0 - STALL_WEIGHT * stall;
    }
    return value;
  };

  LiveAbrController.prototype.plan = function (bufferS, latencyS) {
    var throughput = this.safeBps();
    if (throughput === null) {
      return this.level;
    }
    var room = this.roomS(latencyS);
    var rtt = this.rttS();
    var best = this.level;
    var bestValue = -Infinity;
    for (var level = 0; level < this.bitratesBps.length; level++) {
      var value = this.planValue(level, throughput, rtt, bufferS, room);
      if (value > bestValue) {
        best = level;
        bestValue = value;
      }
    }
    return best;
  };

  LiveAbrController.prototype.sustainable = function (level) {
    var throughput = this.estimateBps();
    if (throughput === null) {
      return this.level;
    }
    var rtt = this.rttS();
    while (level > this.level) {
      if (rtt + this.bitratesBps[level] * this.chunkS / throughput <= UP_SHARE * this.chunkS) {
        break;
      }
      level -= 1;
    }
    return level;
  };

  LiveAbrController.prototype.switchS = function (level) {
    var throughput = this.estimateBps() || this.bitratesBps[level];
    var fetchS = this.bitratesBps[level] * this.chunkS / throughput;
    var waitS = this.blockingReload ? this.chunkS / 2 : 0.0; // the mean wait
    return SWITCH_FETCHES * this.rttS() + fetchS + waitS;
  };

  LiveAbrController.prototype.choose = function (bufferS, latencyS, switchPoint) {
    switchPoint = switchPoint !== false;
    this.sinceDownS += this.chunkS;
    var best = this.plan(bufferS, latencyS);
    if (best > this.level) {
      best = this.sustainable(best);
    }
    if (best < this.level) {
      this.down(best);
    } else if (best === this.level) {
      this.upHeldS = 0.0;
    } else if (!this.switchedDown) {
      if (switchPoint && bufferS >= this.switchS(best)) {
        this.level = best;
      }
    } else {
      this.upHeldS += this.chunkS;
      if (this.upHeldS >= UP_HOLD_S && this.sinceDownS >= DOWN_HOLD_S && switchPoint &&
        bufferS >= this.switchS(this.level + 1)) {
        this.level += 1;
        this.upHeldS = 0.0;
      }
    }
    return this.level;
  };

  LiveAbrController.prototype.down = function (level) {
    this.level = level;
    this.switchedDown = true;
    this.upHeldS = 0.0;
    this.sinceDownS = 0.0;
  };

  LiveAbrController.prototype.abandon = function (level, loadedBytes, totalBytes, elapsedS,
    bufferS) {
    if (level <= 0 || loadedBytes <= 0 || elapsedS < ABANDON_AFTER_SHARE * this.chunkS) {
      return null;
    }
    var rtt = this.rttS();
    var rate = loadedBytes * 8.0 / Math.max(elapsedS - rtt, MIN_TRANSFER_S);
    var remainingS = (totalBytes - loadedBytes) * 8.0 / rate;
    if (remainingS <= bufferS) {
      return null;
    }
    var choice = 0;
    for (var lower = 0; lower < level; lower++) {
      if (rtt + this.bitratesBps[lower] * this.chunkS / rate <= bufferS) {
        choice = lower;
      }
    }
    if (rtt + this.bitratesBps[choice] * this.chunkS / rate >= remainingS) {
      return null;
    }
    this.addSample(loadedBytes, elapsedS, Math.min(rtt, elapsedS));
    this.down(choice);
    return choice;
  };

  // -- hls.js ----------------------------------------------------------------------------

  // A subclass of hls.js's own AbrController (Hls.DefaultConfig.abrController): hls.js keeps
  // its bookkeeping (and its bandwidth estimate, shown for comparison), but every fragment's
  // level comes from LiveAbrController, decided once per fragment, and the 100 ms emergency
  // check is LiveAbrController.abandon instead of hls.js's rule.
  // The rung to start on: the highest within START_SHARE of the browser's own estimate of
  // its downlink (the Network Information API, Chrome and Android's browsers; Shaka Player
  // starts from it too), the lowest without one. Starting where the player will stay spares
  // the up-switch seconds after the start, when a low-latency buffer is thinnest (a 160p to
  // 720p switch 0.5 s in froze bench.glass's picture for 0.44 s).
  var START_SHARE = 0.7;

  function startLevel(bitratesBps) {
    var connection = typeof navigator !== "undefined" && navigator.connection;
    var downlinkBps = connection && connection.downlink > 0 ? connection.downlink * 1e6 : 0;
    var level = 0;
    for (var i = 0; i < bitratesBps.length; i++) {
      if (bitratesBps[i] <= START_SHARE * downlinkBps) {
        level = i;
      }
    }
    return level;
  }

  function hlsAbrController(Hls) {
    var Base = Hls.DefaultConfig.abrController;
    var Events = Hls.Events;

    class OnairHlsAbrController extends Base {
      constructor(hls) {
        super(hls);
        this.onair = null;
        this.onairLevelsKey = "";
        this.onairDecision = -1; // the level chosen for the next fragment, -1: not yet
        this.onairLastLoaded = -1;
        this._abandonRulesCheck = this.onairAbandonCheck.bind(this);
        hls.on(Events.FRAG_LOADED, this.onairFragLoaded, this);
      }

      destroy() {
        if (this.hls) {
          this.hls.off(Events.FRAG_LOADED, this.onairFragLoaded, this);
        }
        super.destroy();
      }

      // The controller for the current levels (made again if the levels change).
      onairController() {
        var hls = this.hls;
        var levels = (hls && hls.levels) || [];
        if (!levels.length) {
          return null;
        }
        var peak = levels.map(function (l) { return l.bitrate; });
        var average = levels.map(function (l) { return l.averageBitrate || l.bitrate; });
        var bitrates = average.every(function (b, i) { return i === 0 || b >= average[i - 1]; })
          ? average : peak;
        var key = bitrates.join(",");
        if (!this.onair || key !== this.onairLevelsKey) {
          var details = levels[0].details;
          var chunkS = (details && (details.partTarget || details.targetduration)) || 2;
          var target = hls.targetLatency || 3 * chunkS;
          this.onair = new LiveAbrController(bitrates, { chunkS: chunkS, targetLatencyS: target,
            startLevel: startLevel(bitrates) });
          this.onairLevelsKey = key;
          this.onairDecision = -1;
        }
        return this.onair;
      }

      onairBufferS() {
        var info = this.hls && this.hls.mainForwardBufferInfo;
        return info ? info.len : 0;
      }

      // whether the next chunk starts a segment (LL-HLS: only a segment's first part opens
      // with a keyframe; hls.js switching mid-segment fetches the new rung from that part)
      onairSwitchPoint() {
        var hls = this.hls;
        var info = hls && hls.mainForwardBufferInfo;
        var level = hls && hls.levels[hls.loadLevel];
        var details = level && level.details;
        if (!info || !details || !details.partList) {
          return true;
        }
        var margin = details.partTarget / 2;
        return details.fragments.some(function (frag) {
          return Math.abs(frag.start - info.end) < margin;
        }) || (!!details.fragmentHint && Math.abs(details.fragmentHint.start - info.end) < margin);
      }

      // How far the live edge of rung `level` is behind the loading rung's, by the loading
      // rung's EXT-X-RENDITION-REPORTs (LL-HLS; seconds, 0 when unknown). A rung whose
      // encoder fell behind (a busy machine) has no part yet where the player is: switching
      // to it waits for its edge (one bench.glass run switched 360p to a 480p two segments
      // behind and stalled 2.4 s).
      onairLagS(level) {
        var hls = this.hls;
        var loading = hls && hls.levels[hls.loadLevel];
        var details = loading && loading.details;
        var wanted = hls && hls.levels[level];
        var reports = details && details.renditionReports;
        if (!reports || !wanted || !details.partTarget || level === hls.loadLevel) {
          return 0;
        }
        var target = wanted.uri.split("?")[0];
        for (var i = 0; i < reports.length; i++) {
          var uri;
          try {
            uri = new URL(reports[i].URI, details.url).href.split("?")[0];
          } catch (error) {
            continue;
          }
          if (uri !== target) {
            continue;
          }
          var msn = parseInt(reports[i]["LAST-MSN"], 10);
          var part = parseInt(reports[i]["LAST-PART"], 10);
          if (!(msn >= 0)) {
            return 0;
          }
          var lagS = (details.lastPartSn - msn) * details.targetduration +
            (details.lastPartIndex - (part >= 0 ? part : 0)) * details.partTarget;
          return Math.max(0, lagS);
        }
        return 0;
      }

      // A down-switch to a rung that lags goes on down to the highest rung below it that
      // keeps up (fewer bits, no wait for a late edge); if none does, the choice stands.
      // (bench.glass: 720p, the source passed through, down to a 480p 1.4 s behind: a
      // 1.5 s stall, and more while that encoder stayed behind.)
      onairKeepingUp(choice) {
        var hls = this.hls;
        var details = hls.levels[hls.loadLevel] && hls.levels[hls.loadLevel].details;
        var partS = (details && details.partTarget) || 0;
        if (!(partS > 0) || choice >= hls.loadLevel || this.onairLagS(choice) <= partS) {
          return choice;
        }
        for (var level = choice - 1; level >= 0; level--) {
          if (this.onairLagS(level) <= partS) {
            this.onair.down(level);
            return level;
          }
        }
        return choice;
      }

      // Up-switches wait while a rung above lags the loading one by more than a part.
      onairRungsAboveKeepUp() {
        var hls = this.hls;
        var levels = (hls && hls.levels) || [];
        var details = levels[hls.loadLevel] && levels[hls.loadLevel].details;
        var partS = (details && details.partTarget) || 0;
        for (var level = hls.loadLevel + 1; partS > 0 && level < levels.length; level++) {
          if (this.onairLagS(level) > partS) {
            return false;
          }
        }
        return true;
      }

      onairLatencyS() {
        var hls = this.hls;
        var latency = hls ? hls.latency : 0;
        return latency > 0 ? latency : this.onair.targetLatencyS;
      }

      onairFragLoaded(_event, data) {
        var frag = data.frag;
        if (frag.type !== "main" || frag.sn === "initSegment" || frag.bitrateTest) {
          return;
        }
        var controller = this.onairController();
        if (!controller) {
          return;
        }
        var part = data.part;
        var stats = part ? part.stats : frag.stats;
        var duration = part ? part.duration : frag.duration;
        if (duration > 0) {
          controller.chunkS = duration;
        }
        var target = this.hls.targetLatency;
        if (target > 0) {
          controller.targetLatencyS = target;
        }
        var details = this.hls.levels[frag.level] && this.hls.levels[frag.level].details;
        controller.blockingReload = !!(details && details.partList && details.canBlockReload);
        var loading = stats.loading;
        controller.addSample(stats.loaded, (loading.end - loading.start) / 1000,
          (loading.first - loading.start) / 1000);
        this.onairLastLoaded = frag.level;
        this.onairDecision = -1;
      }

      get nextAutoLevel() {
        var controller = this.onairController();
        if (!controller) {
          return super.nextAutoLevel;
        }
        if (this.onairDecision < 0) {
          this.onairDecision = this.onairLastLoaded < 0
            ? controller.level
            : this.onairKeepingUp(controller.choose(this.onairBufferS(), this.onairLatencyS(),
              this.onairSwitchPoint() && this.onairRungsAboveKeepUp()));
        }
        var hls = this.hls;
        return Math.min(Math.max(this.onairDecision, hls.minAutoLevel), hls.maxAutoLevel);
      }

      set nextAutoLevel(level) {
        super.nextAutoLevel = level;
      }

      get firstAutoLevel() {
        var controller = this.onairController();
        return controller ? controller.level : 0;
      }

      onairAbandonCheck() {
        var hls = this.hls;
        var frag = this.fragCurrent;
        var controller = this.onair;
        if (!hls || !frag || !controller || !hls.autoLevelEnabled) {
          return;
        }
        var part = this.partCurrent;
        var stats = part ? part.stats : frag.stats;
        if (stats.aborted || (stats.loaded && stats.loaded === stats.total)) {
          this.clearTimer();
          return;
        }
        // the transfer is timed from its first byte (plus the usual round trip): a part
        // asked for through its preload hint waits at the origin until it is made, and that
        // wait is no sign of a slow network. An abandon costs dearly in LL: the new rung is
        // fetched from its segment's first part (a 720p to 160p abandon in one bench.glass
        // run was followed by a 1.1 s stall)
        var first = stats.loading.first;
        if (!(first > 0)) {
          return;
        }
        var elapsedS = (performance.now() - first) / 1000 + controller.rttS();
        var duration = part ? part.duration : frag.duration;
        var level = hls.levels[frag.level];
        var expected = stats.total || Math.round(duration * level.bitrate / 8);
        var choice = controller.abandon(frag.level, stats.loaded, expected, elapsedS,
          this.onairBufferS());
        if (choice === null) {
          return;
        }
        this.onairDecision = choice;
        hls.nextLoadLevel = choice;
        this.clearTimer();
        frag.abortRequests();
        this.fragCurrent = this.partCurrent = null;
        hls.trigger(Events.FRAG_LOAD_EMERGENCY_ABORTED, { frag: frag, part: part, stats: stats });
      }
    }

    return OnairHlsAbrController;
  }

  // Catch-up: a low-latency player behind its target latency plays up to CATCH_UP_MAX_RATE
  // times as fast until it is back, as long as it keeps CATCH_UP_BUFFER_PARTS parts
  // buffered. hls.js's own catch-up waits for more than 1 s of buffer, which a player held
  // back 3 parts of 0.2 s (PART-HOLD-BACK 0.6 s) never has: it stayed wherever it started,
  // ~0.6 s behind its target in bench.glass. Further behind than a target duration past the
  // target is left alone when it is the viewer's own choice (`held`: paused or seeked back,
  // which player.js sees), as hls.js does; a player that a stall left there catches up from
  // any distance (bench.glass: one 2.4 s stall left a player 2.6 s behind its target for
  // the rest of the run when every distance past a target duration was left alone).
  // a player joins at a segment's first part (the only one with a keyframe), up to a
  // segment behind: at 1.1x bench.glass took ~20 s to come back from that (p95 2.1 s)
  var CATCH_UP_MAX_RATE = 1.2;
  var CATCH_UP_GAIN = 0.2; // rate above 1 per second behind the target
  var CATCH_UP_DEADBAND_PARTS = 0.5; // closer than half a part to the target is on target
  // parts kept buffered while catching up: with 2 (0.4 s), two of two bench.glass runs
  // stalled ~1.1 s at a rung switch
  var CATCH_UP_BUFFER_PARTS = 3;

  function catchUpRate(latencyS, targetS, bufferS, partS, segmentS, held) {
    var behind = latencyS - targetS;
    if (!(latencyS > 0 && targetS > 0 && partS > 0) || (held && behind > targetS + segmentS)) {
      return 1;
    }
    if (behind <= CATCH_UP_DEADBAND_PARTS * partS || bufferS < CATCH_UP_BUFFER_PARTS * partS) {
      return 1;
    }
    var rate = 1 + Math.min(CATCH_UP_MAX_RATE - 1, CATCH_UP_GAIN * behind);
    return Math.round(rate * 100) / 100;
  }

  return {
    LiveAbrController: LiveAbrController,
    hlsAbrController: hlsAbrController,
    catchUpRate: catchUpRate,
  };
});
