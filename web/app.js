// The Email tab of an agent's settings, against the mailbridge API on this origin.
// The page is opened as /#token=<JWT>&agent=<agentId> (the fragment never reaches a server).
"use strict";

const API_ORIGIN = window.location.origin;
const STATUS_LABELS = {
  not_connected: "Not Connected",
  configured: "Configured",
  awaiting_authorization: "Awaiting Authorization",
  connected: "Connected",
  error: "Error",
};
const PROVIDER_NAMES = { microsoft: "Microsoft", google: "Google" };

const params = new URLSearchParams(window.location.hash.slice(1));
const token = params.get("token") || "";
const agentId = params.get("agent") || "demo-agent";
const configPath = `/bridge/agents/${encodeURIComponent(agentId)}/email-config`;
const sendPath = `/bridge/agents/${encodeURIComponent(agentId)}/mail/send`;

const $ = (id) => document.getElementById(id);
let view = null; // the last GET (or PUT) answer
let presets = [];
let method = "imap";

async function api(method_, path, body, headers = {}) {
  const response = await fetch(API_ORIGIN + path, {
    method: method_,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = (data && data.error) || { code: "http_" + response.status, message: response.statusText };
    throw Object.assign(new Error(error.message), error);
  }
  return data;
}

function notice(text) {
  const element = $("notice");
  element.textContent = text;
  element.hidden = !text;
}

function failure(error) {
  notice(`${error.message}${error.hint ? " " + error.hint : ""}`);
}

// ---- rendering ------------------------------------------------------------------------

function render() {
  const status = view ? view.status : "not_connected";
  const badge = $("status-badge");
  badge.textContent = STATUS_LABELS[status];
  badge.className = `badge ${status}`;
  // Why, and since when: the reason's stable code and when the status was last checked.
  const checked = view && view.checked_at ? ` · checked ${new Date(view.checked_at).toLocaleString()}` : "";
  $("status-detail").textContent = view ? `${view.reason}${checked}` : "";

  const lastError = view && view.last_error;
  $("last-error").hidden = !lastError;
  if (lastError) {
    // The agent's own use of its mail failed, not a test: say which.
    const during = { reading: "Reading mail failed: ", sending: "Sending failed: " }[lastError.during];
    $("last-error-message").textContent = (during || "") + lastError.message;
    $("last-error-hint").textContent = lastError.hint || "";
  }

  // What works, but not fully (the agent can receive but not send...): each with its fix.
  const warnings = (view && view.warnings) || [];
  $("warnings").hidden = warnings.length === 0;
  $("warning-list").replaceChildren(
    ...warnings.map((warning) => {
      const item = document.createElement("li");
      item.dataset.code = warning.code;
      const message = Object.assign(document.createElement("span"), { textContent: warning.message });
      const hint = Object.assign(document.createElement("span"), {
        className: "hint",
        textContent: warning.hint ? ` ${warning.hint}` : "",
      });
      item.append(message, hint);
      return item;
    }),
  );

  const clientOrg = view && view.client_org;
  $("client-org-banner").hidden = !clientOrg;
  if (clientOrg) {
    $("client-org-name").textContent = `${clientOrg.name}: this agent follows the client organization's email policy.`;
    $("client-org-domain").textContent = clientOrg.email_domain
      ? `Sends from the @${clientOrg.email_domain} domain.`
      : "";
    $("client-org-warnings").replaceChildren(
      ...clientOrg.warnings.map((warning) => Object.assign(document.createElement("li"), { textContent: warning })),
    );
  }

  document.querySelectorAll("input[name=method]").forEach((radio) => {
    radio.checked = radio.value === method;
  });
  $("imap-form").hidden = method !== "imap";
  $("oauth-form").hidden = method === "imap";
  renderOrgBanner();
  if (method === "imap") renderImap();
  else renderOAuth();
  $("test").disabled = $("disconnect").disabled = !(view && view.config);
  renderTestMessage();
}

// The connection's own address: where a test message goes unless someone types another.
function connectedAddress() {
  const config = view && view.config;
  if (!config) return "";
  return config.provider === "imap" ? config.email : (config.authorization && config.authorization.email) || "";
}

function renderTestMessage() {
  const connected = Boolean(view && view.status === "connected");
  $("test-message").hidden = !connected;
  if (connected && !$("test-message-to").value) $("test-message-to").value = connectedAddress();
}

function sharedApp() {
  return view && view.shared_apps.find((app) => app.provider === method);
}

function renderOrgBanner() {
  const app = method === "imap" ? null : sharedApp();
  $("org-banner").hidden = !app;
  if (app) {
    const owner = app.source === "client_org" ? "client organization" : "organization";
    $("org-banner").textContent =
      `Your ${owner} has a shared ${PROVIDER_NAMES[app.provider]} app (client ID ${app.client_id}). ` +
      "Its client ID and secret are inherited: just Save and Authorize this agent's account.";
  }
}

function renderImap() {
  const config = view && view.config && view.config.provider === "imap" ? view.config : null;
  if (config) {
    $("preset").value = config.preset;
    $("email").value = config.email;
    $("username").value = config.username === config.email ? "" : config.username;
    for (const protocol of ["imap", "smtp"]) {
      $(`${protocol}-host`).value = config[protocol].host;
      $(`${protocol}-port`).value = config[protocol].port;
      $(`${protocol}-security`).value = config[protocol].security;
    }
  }
  $("password").value = "";
  $("password").placeholder = config ? "Leave blank to keep the current one" : "";
  $("password-help").textContent = config
    ? `A password is stored (set ${new Date(config.password.updated_at).toLocaleString()}). Leave blank to keep the current one.`
    : "Use an app password, not your account password.";
  applyPreset(false);
}

function applyPreset(fill) {
  const preset = presets.find((candidate) => candidate.id === $("preset").value);
  const note = preset && preset.note;
  $("preset-note").hidden = !note;
  $("preset-note").textContent = note || "";
  const custom = !preset || preset.id === "custom";
  for (const protocol of ["imap", "smtp"]) {
    for (const part of ["host", "port", "security"]) {
      const input = $(`${protocol}-${part}`);
      input.readOnly = !custom;
      input.disabled = !custom && part === "security";
      if (fill && !custom) input.value = preset[protocol][part];
    }
  }
}

function renderOAuth() {
  const config = view && view.config && view.config.provider === method ? view.config : null;
  const name = PROVIDER_NAMES[method];
  $("oauth-title").textContent = `${name} OAuth`;
  $("tenant-field").hidden = method !== "microsoft";
  $("client-id").value = (config && config.client_id) || "";
  $("tenant").value = (config && config.tenant) || "";
  $("client-secret").value = "";
  const ownSecret = config && config.client_secret;
  $("client-secret").placeholder = ownSecret ? "Leave blank to keep the current one" : "";
  $("client-secret-help").textContent = sharedApp() && !(config && config.client_id)
    ? "Leave the client ID and secret empty to use the shared app."
    : ownSecret ? "A client secret is stored. Leave blank to keep the current one." : "";
  $("redirect-uri").value = (config && config.redirect_uri) || `${API_ORIGIN}/api/engine/oauth/callback`;
  $("scopes").textContent = config ? `Asks for: ${config.scopes.join(", ")}.` : "";
  $("authorize").disabled = !config;
  // Offered once an account was authorized, so also when its grant died (the error's
  // hint names this button).
  $("reauthorize").hidden = !(config && config.authorization);
}

function renderTest(result) {
  const box = $("test-result");
  box.hidden = false;
  const lines = [];
  if (result.ok) {
    lines.push(`<p class="result-ok">Connection works.</p>`);
    lines.push(
      `<div class="stats"><div class="stat"><strong id="inbox-total"></strong>messages in the inbox</div>` +
      `<div class="stat"><strong id="inbox-unread"></strong>unread</div>` +
      `<div class="stat"><strong id="confirmed-email"></strong>${result.login ? "login accepted" : "confirmed address"}</div></div>`,
    );
  } else {
    lines.push(`<p class="result-error" id="test-error"></p><p class="hint" id="test-hint"></p>`);
  }
  lines.push(`<ul class="checks" id="checks"></ul>`);
  box.innerHTML = lines.join(""); // static markup only; values are set as text below
  if (result.ok) {
    $("inbox-total").textContent = result.inbox.total.toLocaleString();
    $("inbox-unread").textContent = result.inbox.unread.toLocaleString();
    // IMAP confirms the login it accepted (an address or not); OAuth, the account's address.
    $("confirmed-email").textContent = result.login || result.email;
  } else {
    $("test-error").textContent = result.error.message;
    $("test-hint").textContent = result.error.hint || "";
  }
  $("checks").replaceChildren(
    ...result.checks.map((check) =>
      Object.assign(document.createElement("li"), {
        textContent: `${check.ok ? "✓" : "✗"} ${check.name} (${check.latency_ms} ms)${check.error ? ": " + check.error.code : ""}`,
      }),
    ),
  );
}

// ---- actions --------------------------------------------------------------------------

async function load() {
  view = await api("GET", configPath);
  if (view.config) method = view.config.provider;
  render();
}

function imapBody() {
  const body = { provider: "imap", preset: $("preset").value, email: $("email").value.trim() };
  if ($("username").value.trim()) body.username = $("username").value.trim();
  if ($("password").value) body.password = $("password").value; // blank keeps the stored one
  if ($("preset").value === "custom") {
    for (const protocol of ["imap", "smtp"]) {
      body[protocol] = {
        host: $(`${protocol}-host`).value.trim(),
        port: Number($(`${protocol}-port`).value),
        security: $(`${protocol}-security`).value,
      };
    }
  }
  return body;
}

function oauthBody() {
  const body = { provider: method };
  if ($("client-id").value.trim()) body.client_id = $("client-id").value.trim();
  if ($("client-secret").value) body.client_secret = $("client-secret").value;
  if (method === "microsoft" && $("tenant").value.trim()) body.tenant = $("tenant").value.trim();
  return body;
}

async function save(event) {
  event.preventDefault();
  try {
    view = await api("PUT", configPath, method === "imap" ? imapBody() : oauthBody());
    notice("Configuration saved.");
    render();
  } catch (error) {
    failure(error);
  }
}

async function authorize(route, switchAccount = false) {
  // Open the popup first, inside the click, so that popup blockers allow it.
  const popup = window.open("about:blank", "mailbridge-oauth", "popup,width=520,height=680");
  $("account-switch").hidden = true;
  try {
    const body = { origin: API_ORIGIN, ...(switchAccount ? { switch_account: true } : {}) };
    const started = await api("POST", `${configPath}/${route}`, body);
    if (!popup) {
      notice("The sign-in popup was blocked: allow popups for this page and click Authorize again.");
      return;
    }
    popup.location.href = started.authorization_url;
    notice(`Sign in with the agent's ${PROVIDER_NAMES[method]} account in the popup.`);
  } catch (error) {
    if (popup) popup.close();
    failure(error);
  }
}

// The popup's result: trusted only from the API's own origin and for this agent.
window.addEventListener("message", async (event) => {
  if (event.origin !== API_ORIGIN) return;
  const result = event.data;
  if (!result || result.type !== "mailbridge:oauth-result" || result.agentId !== agentId) return;
  if (result.error && result.error.code === "account_mismatch") {
    // Nothing changed: replacing the connected mailbox takes the user's word, and a new
    // sign-in (the button's click opens its popup).
    notice("");
    $("account-switch-reason").textContent = result.error.message;
    $("account-switch-question").textContent =
      `Switch to ${result.email || "the other account"}? The old mailbox will be disconnected.`;
    $("account-switch").hidden = false;
    await load();
    return;
  }
  notice(
    result.status === "connected"
      ? `Connected as ${result.email}.`
      : `Authorization failed: ${result.error.message}`,
  );
  await load();
});

async function runTest() {
  $("test").disabled = true;
  try {
    const result = await api("POST", `${configPath}/test`);
    renderTest(result);
    await load();
  } catch (error) {
    failure(error);
  } finally {
    $("test").disabled = false;
  }
}

async function sendTestMessage(event) {
  event.preventDefault();
  const result = $("test-message-result");
  const to = $("test-message-to").value.trim();
  $("send-test-message").disabled = true;
  try {
    // A new key per click: a retry of this request sends nothing twice, another click does.
    const sent = await api(
      "POST",
      sendPath,
      {
        to: [to],
        subject: "Test message from your agent",
        text: "This message was sent from the Email tab to check that the agent can send mail.",
      },
      { "Idempotency-Key": crypto.randomUUID() },
    );
    result.textContent = `Sent to ${sent.recipients.join(", ")}.`;
    await load();
  } catch (error) {
    result.textContent = `Not sent: ${error.message}${error.hint ? " " + error.hint : ""}`;
  } finally {
    result.hidden = false;
    $("send-test-message").disabled = false;
  }
}

async function disconnect() {
  if (!window.confirm("Disconnect this agent's mailbox? Its stored credentials are deleted.")) return;
  try {
    view = await api("DELETE", configPath);
    $("test-result").hidden = true;
    notice("Disconnected.");
    render();
  } catch (error) {
    failure(error);
  }
}

async function start() {
  $("agent-id").textContent = agentId;
  if (!token) {
    notice("Open this page with #token=<JWT>&agent=<agent id> (the local run prints the link).");
    return;
  }
  document.querySelectorAll("input[name=method]").forEach((radio) =>
    radio.addEventListener("change", () => {
      method = radio.value;
      notice("");
      render();
    }),
  );
  $("preset").addEventListener("change", () => applyPreset(true));
  $("imap-form").addEventListener("submit", save);
  $("oauth-form").addEventListener("submit", save);
  $("authorize").addEventListener("click", () => authorize("authorize"));
  $("reauthorize").addEventListener("click", () => authorize("reauthorize"));
  $("switch-account").addEventListener("click", () => authorize("reauthorize", true));
  $("keep-account").addEventListener("click", () => {
    $("account-switch").hidden = true;
    notice("The connected mailbox was kept.");
  });
  $("test").addEventListener("click", runTest);
  $("disconnect").addEventListener("click", disconnect);
  $("test-message-form").addEventListener("submit", sendTestMessage);
  try {
    presets = (await api("GET", "/bridge/email-presets")).presets;
    $("preset").replaceChildren(
      ...presets.map((preset) => Object.assign(document.createElement("option"), { value: preset.id, textContent: preset.label })),
    );
    $("preset").value = "custom";
    await load();
    document.body.dataset.ready = "true"; // for people and tests: the form now shows the server's state
  } catch (error) {
    failure(error);
  }
}

// The agent and token live in the fragment: a new fragment is another agent's tab.
window.addEventListener("hashchange", () => window.location.reload());

start();
