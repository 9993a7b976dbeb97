// onair chat panel: connects to the chat WebSocket named by <div id="chat" data-ws-path=…>,
// renders messages (always as text, never as HTML), reconnects with backoff and fills the gap
// from /api/chat/<channel>?since=…, and sends with a user token (from `onair user token NAME`)
// kept in localStorage. Frame reference: docs/chat.md. State: window.onairChat (for tests).
(function () {
  "use strict";

  var root = document.getElementById("chat");
  if (!root || !root.dataset.wsPath || !window.WebSocket) {
    return;
  }
  var channel = root.dataset.channel || "";
  var MAX_LINES = 300;
  var HISTORY_ON_JOIN = 50;
  var TOKEN_KEY = "onair-chat-token";

  var state = {
    channel: channel,
    connected: false,
    user: null,
    messages: 0, // messages shown so far
    lastTs: null, // newest message time seen, for filling gaps after a reconnect
    errors: [], // last error codes, newest last
  };
  window.onairChat = state;

  var seen = {}; // message id -> <li>, for the lines on screen
  var socket = null;
  var retryMs = 1000;

  // ---- DOM (built with createElement/textContent only) ------------------------------------

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
  root.style.display = "flex";
  root.style.flexDirection = "column";
  var log = el("ul", "chat-log");
  log.setAttribute("aria-live", "polite");
  log.style.listStyle = "none";
  log.style.margin = "0";
  log.style.padding = "0.5em";
  log.style.flex = "1";
  log.style.overflowY = "auto";
  log.style.overflowWrap = "anywhere";
  var status = el("div", "chat-status", "connecting…");
  var form = el("form", "chat-form");
  form.style.display = "flex";
  form.style.gap = "0.25em";
  form.style.padding = "0.5em";
  var input = el("input", "chat-input");
  input.type = "text";
  input.maxLength = 500;
  input.autocomplete = "off";
  input.placeholder = "Send a message";
  input.style.flex = "1";
  var button = el("button", "chat-send", "Chat");
  button.type = "submit";
  var tokenForm = el("form", "chat-token-form");
  tokenForm.style.display = "flex";
  tokenForm.style.gap = "0.25em";
  tokenForm.style.padding = "0 0.5em 0.5em";
  var tokenInput = el("input", "chat-token");
  tokenInput.type = "password";
  tokenInput.autocomplete = "off";
  tokenInput.placeholder = "paste a token from: onair user token NAME";
  tokenInput.style.flex = "1";
  var tokenButton = el("button", "chat-token-save", "Sign in");
  tokenButton.type = "submit";
  form.appendChild(input);
  form.appendChild(button);
  tokenForm.appendChild(tokenInput);
  tokenForm.appendChild(tokenButton);
  root.appendChild(log);
  root.appendChild(status);
  root.appendChild(form);
  root.appendChild(tokenForm);

  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  function append(node) {
    var stick = atBottom();
    log.appendChild(node);
    while (log.childNodes.length > MAX_LINES) {
      var first = log.firstChild;
      if (first.dataset && first.dataset.id) {
        delete seen[first.dataset.id];
      }
      log.removeChild(first);
    }
    if (stick) {
      log.scrollTop = log.scrollHeight;
    }
  }

  function userColor(name) {
    var hash = 0;
    for (var i = 0; i < name.length; i++) {
      hash = (hash * 31 + name.charCodeAt(i)) | 0;
    }
    return "hsl(" + (Math.abs(hash) % 360) + ", 70%, 65%)";
  }

  function showMessage(message) {
    if (!message || typeof message.id !== "string" || seen[message.id]) {
      return;
    }
    var line = el("li", "chat-line");
    line.dataset.id = message.id;
    line.dataset.user = String(message.user);
    var who = el("span", "chat-user", String(message.user));
    who.style.color = userColor(String(message.user));
    who.style.fontWeight = "bold";
    line.appendChild(who);
    line.appendChild(document.createTextNode(": "));
    line.appendChild(el("span", "chat-text", String(message.text)));
    if (typeof message.ts === "number") {
      line.title = new Date(message.ts).toLocaleTimeString();
      if (state.lastTs === null || message.ts > state.lastTs) {
        state.lastTs = message.ts;
      }
    }
    seen[message.id] = line;
    state.messages += 1;
    append(line);
  }

  function showSystem(text) {
    var line = el("li", "chat-line chat-system", text);
    line.style.opacity = "0.7";
    line.style.fontStyle = "italic";
    append(line);
  }

  function hideMessage(id) {
    var line = seen[id];
    if (line && line.parentNode) {
      line.textContent = "";
      line.appendChild(el("span", "chat-deleted", "<message deleted>"));
      line.style.opacity = "0.5";
    }
  }

  function hideUser(user) {
    var lines = log.querySelectorAll("li.chat-line");
    for (var i = 0; i < lines.length; i++) {
      if (lines[i].dataset.user === user && lines[i].dataset.id) {
        hideMessage(lines[i].dataset.id);
      }
    }
  }

  // ---- history -----------------------------------------------------------------------------

  function loadHistory() {
    var url = "/api/chat/" + encodeURIComponent(channel);
    url += state.lastTs === null ? "?limit=" + HISTORY_ON_JOIN : "?since=" + state.lastTs;
    return fetch(url, { headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (page) {
        if (page && Array.isArray(page.messages)) {
          page.messages.forEach(showMessage);
          if (page.more && page.next_since !== null && state.lastTs !== null) {
            return loadHistory(); // more of the gap to fill
          }
        }
        return null;
      })
      .catch(function () {
        return null; // history is a nicety; live chat goes on without it
      });
  }

  // ---- socket ------------------------------------------------------------------------------

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function authenticate() {
    var token = null;
    try {
      token = window.localStorage.getItem(TOKEN_KEY);
    } catch (e) {
      token = null;
    }
    if (token) {
      send({ type: "auth", token: token });
    } else {
      status.textContent = "read-only: sign in with a token to chat";
    }
  }

  var handlers = {
    welcome: function () {
      state.connected = true;
      retryMs = 1000;
      status.textContent = "connected";
      authenticate();
      loadHistory();
    },
    authed: function (frame) {
      state.user = frame.user;
      status.textContent = "chatting as " + frame.user;
    },
    batch: function (frame) {
      (frame.messages || []).forEach(showMessage);
    },
    message: function (frame) {
      showMessage(frame);
    },
    ack: function () {},
    pong: function () {},
    notice: function (frame) {
      if (frame.code === "message_deleted") {
        hideMessage(frame.id);
        return;
      }
      if (frame.code === "user_banned" || frame.code === "user_timed_out") {
        hideUser(frame.user);
      }
      showSystem(String(frame.message || frame.code));
    },
    error: function (frame) {
      state.errors.push(frame.code);
      if (state.errors.length > 20) {
        state.errors.shift();
      }
      if (frame.code === "auth_failed") {
        try {
          window.localStorage.removeItem(TOKEN_KEY);
        } catch (e) {
          /* storage unavailable */
        }
        status.textContent = "token refused: sign in again";
        return;
      }
      var text = String(frame.message || frame.code);
      if (typeof frame.retry_after_ms === "number") {
        text += " (retry in " + Math.ceil(frame.retry_after_ms / 1000) + " s)";
      }
      showSystem(text);
    },
  };

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + root.dataset.wsPath);
    socket.onmessage = function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      var handler = frame && handlers[frame.type];
      if (handler) {
        handler(frame);
      }
    };
    socket.onclose = function (event) {
      state.connected = false;
      state.user = null;
      var wait = Math.min(retryMs, 15000) * (0.75 + Math.random() * 0.5);
      status.textContent =
        "disconnected" + (event.reason ? " (" + event.reason + ")" : "") +
        ", reconnecting in " + Math.round(wait / 1000) + " s";
      retryMs = Math.min(retryMs * 2, 15000);
      window.setTimeout(connect, wait);
    };
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value;
    if (text.trim() && send({ type: "send", text: text })) {
      input.value = "";
    }
  });

  tokenForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var token = tokenInput.value.trim();
    if (!token) {
      return;
    }
    try {
      window.localStorage.setItem(TOKEN_KEY, token);
    } catch (e) {
      /* storage unavailable: use it for this connection only */
    }
    tokenInput.value = "";
    send({ type: "auth", token: token });
  });

  connect();
})();
