// The Email tab of an agent's settings, against the mailbridge API on this origin.
// The page is opened as /#token=<JWT>&agent=<agentId>, and optionally &back=<the agent's page
// on this origin> (the fragment never reaches a server).
"use strict";

const API_ORIGIN = window.location.origin;
const STATUS_LABELS = {
  not_connected: "Not Connected",
  configured: "Configured",
  awaiting_authorization: "Awaiting Authorization",
  connected: "Connected",
  error: "Error",
};
const METHOD_NAMES = { imap: "Email + Password", microsoft: "Microsoft OAuth", google: "Google OAuth" };
const PROVIDER_NAMES = { microsoft: "Microsoft", google: "Google" };
// The status's reason in words; an error's code is not repeated here (the Last Error says it).
const REASONS = {
  untested: "saved, not tested yet",
  authorization_required: "waiting for the account's sign-in",
  verified: "verified",
};
const CHECK_NAMES = {
  imap: "IMAP (reading)",
  smtp: "SMTP (sending)",
  authorization: "Authorization",
  mailbox: "Mailbox",
  permissions: "Permissions",
  policy: "Client organization policy",
};
// A new connection starts on the most common provider that still takes an app password
// (Microsoft 365 no longer does: its note points to Microsoft OAuth).
const FIRST_PRESET = "gmail";
// Email discovery: asked once the address has stopped changing for this long.
const DISCOVERY_DELAY_MS = 500;
// What an address must look like before its domain is worth asking about.
const DISCOVERABLE = /^[^@\s]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$/i;
const PROVIDER_LABELS = {
  microsoft365: "Microsoft 365",
  google: "Google Workspace or Gmail",
  yahoo: "Yahoo Mail",
  zoho: "Zoho Mail",
  fastmail: "Fastmail",
};
const SOURCE_NAMES = {
  preset: "the provider's own domain",
  autoconfig: "the domain's autoconfig",
  ispdb: "Thunderbird's ISPDB",
  srv: "the domain's SRV records",
  mx: "the domain's MX records",
  openid_configuration: "the domain's Microsoft tenant",
};
const TOKEN_PROBLEM =
  "This link's sign-in token is missing, invalid or expired. Open the Email tab again from the agent's page.";
// The API's field names, the inputs they are entered in, and the names the page gives them.
const FIELDS = {
  preset: { input: "preset", name: "the email provider" },
  email: { input: "email", name: "the email address" },
  username: { input: "username", name: "the username" },
  password: { input: "password", name: "the app password" },
  "imap.host": { input: "imap-host", name: "the IMAP host" },
  "imap.port": { input: "imap-port", name: "the IMAP port" },
  "imap.security": { input: "imap-security", name: "the IMAP security" },
  "smtp.host": { input: "smtp-host", name: "the SMTP host" },
  "smtp.port": { input: "smtp-port", name: "the SMTP port" },
  "smtp.security": { input: "smtp-security", name: "the SMTP security" },
  client_id: { input: "client-id", name: "the client ID" },
  client_secret: { input: "client-secret", name: "the client secret" },
  tenant: { input: "tenant", name: "the tenant ID" },
  to: { input: "test-message-to", name: "the recipient" },
};

const params = new URLSearchParams(window.location.hash.slice(1));
const token = params.get("token") || "";
const agentId = params.get("agent") || "demo-agent";
const configPath = `/bridge/agents/${encodeURIComponent(agentId)}/email-config`;
const sendPath = `/bridge/agents/${encodeURIComponent(agentId)}/mail/send`;

const $ = (id) => document.getElementById(id);
let view = null; // the last GET (or PUT) answer
let presets = [];
let method = "imap";
let busy = false; // a request of the form's buttons is running
const ACTIONS = ["save", "authorize", "reauthorize", "test", "disconnect"];
let setupShownFor = null; // the method whose setup steps were last opened or closed by the page
let discoveryTimer = null;
let discovered = null; // what the last discovery found, for the address in the field
// The person chose the provider or a server themselves: a discovery offers, never overwrites.
let serversChosen = false;

async function api(verb, path, body, headers = {}) {
  let response;
  try {
    response = await fetch(API_ORIGIN + path, {
      method: verb,
      headers: {
        Authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw Object.assign(new Error("The service could not be reached."), {
      hint: "Check your connection, then try again.",
    });
  }
  // API Gateway refuses a bad token itself, without the API's error body.
  if (response.status === 401) throw new Error(TOKEN_PROBLEM);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not the API's answer (a proxy's error page): the status says enough.
  }
  if (!response.ok) {
    const error = (data && data.error) || { message: `The request failed (HTTP ${response.status}).` };
    throw Object.assign(new Error(error.message), error);
  }
  return data;
}

// ---- messages ---------------------------------------------------------------------------

// An action's outcome, replacing the last one, where the action's button is. Each place has
// live regions that are always there, empty until used (a region that appears with its text
// is often not announced): an alert for errors, a status for the rest.
function say(place, kind, text, hint) {
  unsay(place);
  const region = place.querySelector(kind === "error" ? "[role=alert]" : "[role=status]");
  region.className = `message ${kind}`;
  region.append(text);
  if (hint) {
    // The space: read aloud, the hint is a sentence of its own.
    region.append(" ", Object.assign(document.createElement("span"), { className: "hint", textContent: hint }));
  }
  region.scrollIntoView({ block: "nearest" });
}

function unsay(place) {
  place.querySelectorAll("[role]").forEach((region) => region.replaceChildren());
}

function formatTime(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function capitalized(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// The FIELDS key of an API field: a list's index ("to.0") is the list's field.
function fieldKey(apiField) {
  const key = apiField
    .split(".")
    .filter((part) => !/^\d+$/.test(part))
    .join(".");
  return key in FIELDS ? key : null;
}

// The API's sentence, which starts with its name of the field ("imap.host is required ...",
// "email: must be ..."), with the name the form gives the field instead.
function fieldMessage(problem, field, withHint) {
  let text = problem.message;
  let rest = text.slice(problem.field.length);
  if (text.startsWith(problem.field) && /^[: ]/.test(rest)) {
    if (/^: \p{Ll}/u.test(rest)) rest = rest.slice(1); // "email: must be" reads "The email address must be"
    text = capitalized(field.name) + rest;
  }
  return withHint && problem.hint ? `${text} ${problem.hint}` : text;
}

function clearFieldError(input) {
  input.removeAttribute("aria-invalid");
  const error = $(`${input.id}-error`);
  error.textContent = "";
  error.hidden = true;
}

function clearFieldErrors(form) {
  form.querySelectorAll("[aria-invalid]").forEach(clearFieldError);
}

// Every problem at its field (marked for assistive technology, focus on the first), the rest
// and a summary in the action's message. The API names one problem, or lists them in `errors`.
function reportFailure(error, failed, messageElement) {
  const problems = error.errors && error.errors.length ? error.errors : [error];
  // A hint that several problems share is said once, in the summary, not at each field.
  const allHints = problems.map((problem) => problem.hint);
  const shared = new Set(allHints.filter((hint, index) => hint && allHints.indexOf(hint) !== index));
  const elsewhere = [];
  const marked = new Set();
  for (const problem of problems) {
    const key = problem.field ? fieldKey(problem.field) : null;
    const input = key && $(FIELDS[key].input);
    if (!input || input.closest("[hidden]")) {
      elsewhere.push(problem);
      continue;
    }
    input.setAttribute("aria-invalid", "true");
    const fieldError = $(`${input.id}-error`);
    const words = fieldMessage(problem, FIELDS[key], !shared.has(problem.hint));
    fieldError.textContent = marked.has(input) ? `${fieldError.textContent} ${words}` : words;
    fieldError.hidden = false;
    marked.add(input);
  }
  const sentences = elsewhere.map((problem) => problem.message);
  if (marked.size) sentences.push(`${marked.size === 1 ? "A field needs" : `${marked.size} fields need`} attention.`);
  const hints = new Set([...elsewhere.map((problem) => problem.hint).filter(Boolean), ...shared]);
  say(messageElement, "error", `${failed}. ${sentences.join(" ")}`, [...hints].join(" "));
  const firstInvalid = messageElement.closest("form, main").querySelector("[aria-invalid=true]");
  if (firstInvalid) firstInvalid.focus();
}

// ---- rendering --------------------------------------------------------------------------

function savedConfig(provider = method) {
  return view.config && view.config.provider === provider ? view.config : null;
}

// The connection's own address: where a test message goes unless someone types another.
function connectedAddress() {
  const config = view.config;
  if (!config) return "";
  return config.provider === "imap" ? config.email : (config.authorization && config.authorization.email) || "";
}

function sharedApp() {
  return view.shared_apps.find((app) => app.provider === method);
}

function render() {
  const badge = $("status-badge");
  badge.textContent = STATUS_LABELS[view.status];
  badge.className = `badge ${view.status}`;
  $("status-detail").textContent = statusDetail();
  $("status").hidden = false;

  renderOrgBanner();
  renderClientOrg();
  document.querySelectorAll("input[name=method]").forEach((radio) => {
    radio.checked = radio.value === method;
  });
  // The saved method's card, and only it, says that it is saved and how it is.
  document.querySelectorAll(".method-state").forEach((state) => {
    const saved = view.config && view.config.provider === state.dataset.method;
    state.textContent = saved ? `Saved · ${STATUS_LABELS[view.status]}` : "";
    state.className = saved ? `method-state badge ${view.status}` : "method-state";
  });

  $("form-title").textContent = METHOD_NAMES[method];
  const other = view.config && view.config.provider !== method ? view.config.provider : null;
  $("method-note").hidden = !other;
  if (other) {
    $("method-note").textContent =
      `This method is not saved. The agent uses its ${METHOD_NAMES[other]} connection (${STATUS_LABELS[view.status]}); ` +
      `saving ${METHOD_NAMES[method]} replaces it.`;
  }
  $("imap-fields").hidden = method !== "imap";
  $("oauth-fields").hidden = method === "imap";
  if (method === "imap") renderImap();
  else renderOAuth();
  renderActions();
  renderConnectionState();
  renderTestMessage();
}

// Which method, why the status is what it is, and since when.
function statusDetail() {
  if (!view.config) return "";
  const parts = [METHOD_NAMES[view.config.provider]];
  if (REASONS[view.reason]) parts.push(REASONS[view.reason]);
  if (view.checked_at) parts.push(`checked ${formatTime(view.checked_at)}`);
  return parts.join(" · ");
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

// The client organization's policy, as the API words it.
function renderClientOrg() {
  const clientOrg = view.client_org;
  $("client-org-banner").hidden = !clientOrg;
  if (!clientOrg) return;
  $("client-org-name").textContent = clientOrg.name;
  $("client-org-rules").replaceChildren(
    ...clientOrg.warnings.map((rule) => Object.assign(document.createElement("li"), { textContent: rule })),
  );
}

function renderImap() {
  const config = savedConfig("imap");
  if (config) {
    serversChosen = true; // the saved servers stay until the person takes a suggestion
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
    ? `A password is stored (set ${formatTime(config.password.updated_at)}). Leave blank to keep the current one.`
    : "An app password, not the account's own password: with 2-step verification on, the account password does not work.";
  applyPreset(false);
}

// The preset's servers, locked (filled in when `fill`), and its guidance.
function applyPreset(fill) {
  const preset = presets.find((candidate) => candidate.id === $("preset").value);
  $("preset-note").textContent = (preset && preset.note) || "";
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

// ---- settings from the address ----------------------------------------------------------

function discoverSoon() {
  clearTimeout(discoveryTimer);
  const email = $("email").value.trim();
  if (!DISCOVERABLE.test(email)) {
    showDiscovery(null);
    return;
  }
  discoveryTimer = setTimeout(() => discover(email), DISCOVERY_DELAY_MS);
}

async function discover(email) {
  let found = null;
  try {
    found = await api("GET", `/bridge/email-discovery?email=${encodeURIComponent(email)}`);
  } catch {
    // A suggestion only helps: without one (too many lookups, a bad address) the form is as it was.
  }
  if ($("email").value.trim() === email) showDiscovery(found);
}

// What the address's domain calls for, and where that came from; the IMAP servers filled in
// unless the person chose their own, in which case they are offered.
function showDiscovery(found) {
  discovered = found;
  $("discovery-use").hidden = true;
  if (!found) {
    $("discovery").textContent = "";
    return;
  }
  const parts = [];
  const provider = found.provider;
  if (provider.id !== "other") {
    parts.push(`${PROVIDER_LABELS[provider.id]}, by ${SOURCE_NAMES[provider.source]}.`);
  }
  const recommended = found.recommended;
  if (recommended.method !== "imap") {
    parts.push(`${METHOD_NAMES[recommended.method]} is recommended: ${recommended.reason}`);
    if (found.tenant) {
      parts.push(`Its tenant ID is ${found.tenant.id}, from ${SOURCE_NAMES[found.tenant.source]}.`);
    }
    showDiscoveryButton(`Use ${METHOD_NAMES[recommended.method]}`);
    if (!serversChosen && (found.imap || found.smtp)) {
      fillDiscoveredServers(); // should the person keep to IMAP
      parts.push(`For IMAP, servers from ${SOURCE_NAMES[(found.imap || found.smtp).source]} are filled in.`);
    }
  } else if (found.imap || found.smtp) {
    const where = SOURCE_NAMES[(found.imap || found.smtp).source];
    if (serversChosen) {
      parts.push(`Settings found in ${where}.`);
      showDiscoveryButton("Use these settings");
    } else {
      fillDiscoveredServers();
      parts.push(`Servers filled in from ${where}: change them if your provider says otherwise.`);
    }
  } else {
    parts.push(`No settings were found for ${found.domain}: enter your provider's servers.`);
  }
  if (found.unanswered.length) parts.push("Some sources did not answer in time: a later try may find more.");
  $("discovery").textContent = parts.join(" ");
}

function showDiscoveryButton(text) {
  $("discovery-use").textContent = text;
  $("discovery-use").hidden = false;
}

function fillDiscoveredServers() {
  $("preset").value = discovered.recommended.preset;
  applyPreset(true);
  if (discovered.recommended.preset !== "custom") return;
  for (const protocol of ["imap", "smtp"]) {
    const server = discovered[protocol];
    if (!server) continue;
    $(`${protocol}-host`).value = server.host;
    $(`${protocol}-port`).value = server.port;
    $(`${protocol}-security`).value = server.security;
  }
}

function useDiscovery() {
  const recommended = discovered.recommended;
  if (recommended.method === "imap") {
    fillDiscoveredServers();
    serversChosen = false;
    $("discovery-use").hidden = true;
    $("discovery").textContent = `Servers filled in from ${SOURCE_NAMES[(discovered.imap || discovered.smtp).source]}.`;
    return;
  }
  chooseMethod(recommended.method);
  if (discovered.tenant && !$("tenant").value) $("tenant").value = discovered.tenant.id;
}

function renderOAuth() {
  const config = savedConfig();
  const provider = PROVIDER_NAMES[method];
  $("tenant-field").hidden = method !== "microsoft";
  $("client-id").value = (config && config.client_id) || "";
  $("tenant").value = (config && config.tenant) || "";
  $("client-secret").value = "";
  const ownSecret = config && config.client_secret;
  $("client-secret").placeholder = ownSecret ? "Leave blank to keep the current one" : "";
  $("client-secret-help").textContent =
    sharedApp() && !(config && config.client_id)
      ? "Leave the client ID and secret empty to use the shared app."
      : ownSecret
        ? "A client secret is stored. Leave blank to keep the current one."
        : "";

  $("setup-title").textContent = method === "microsoft" ? "Set up the app in Azure" : "Set up the app in Google Cloud";
  document.querySelectorAll("#setup [data-for]").forEach((part) => {
    part.hidden = part.dataset.for !== method;
  });
  document.querySelectorAll("#setup .provider-name").forEach((name) => {
    name.textContent = provider;
  });
  // Open where there is an app to set up; the person's own opening or closing then stays.
  if (setupShownFor !== method) {
    $("setup").open = !config && !sharedApp();
    setupShownFor = method;
  }
  // What to register and grant is the API's to say, saved or not (nothing, on a deployment
  // without this provider: no steps then).
  const setup = view.oauth_setup[method];
  $("setup").hidden = !setup;
  if (!setup) return;
  $("redirect-uri").textContent = setup.redirect_uri;
  $("copy-status").textContent = "";
  $("scopes").replaceChildren(
    ...setup.scopes.map((scope) => {
      const item = document.createElement("li");
      item.append(Object.assign(document.createElement("code"), { textContent: scope }));
      return item;
    }),
  );
}

// Which buttons this card offers, and why one that is shown cannot run yet.
function renderActions() {
  const focused = document.activeElement;
  const saved = view.config;
  const thisSaved = Boolean(savedConfig());
  const oauth = method !== "imap";
  const authorized = thisSaved && oauth && Boolean(saved.authorization);
  $("authorize").hidden = !oauth || authorized;
  $("reauthorize").hidden = !authorized;
  $("disconnect").hidden = !thisSaved;
  let reason = "";
  if (!saved) {
    reason = oauth
      ? "Save the configuration first: Authorize and Test Connection use it."
      : "Save the configuration first: Test Connection checks what is saved.";
  } else if (!thisSaved) {
    reason =
      `Test Connection checks the saved ${METHOD_NAMES[saved.provider]} connection. ` +
      `Save this method first${oauth ? ", then Authorize" : ""}.`;
  } else if (view.status === "awaiting_authorization") {
    reason = `${authorized ? "Re-authorize" : "Authorize"} first: Test Connection needs the account's sign-in.`;
  }
  $("unavailable").textContent = reason;
  $("test").disabled = Boolean(reason);
  $("authorize").disabled = !thisSaved;
  // While one runs, the others wait: aria-disabled, as `disabled` would take the focus away
  // from the button that was pressed (the handlers check `busy`).
  for (const id of ACTIONS) $(id).ariaDisabled = busy ? "true" : null;
  // A button gone with its purpose (Authorize once authorized, Disconnect once disconnected)
  // hands the focus on rather than dropping it.
  if (ACTIONS.includes(focused.id) && (focused.disabled || !focused.checkVisibility())) {
    (focused.id === "authorize" && authorized ? $("reauthorize") : $("save")).focus();
  }
}

// The saved connection's last error, warnings and test, on its own card only.
function renderConnectionState() {
  const thisSaved = Boolean(savedConfig());
  const lastError = thisSaved && view.last_error;
  $("last-error").hidden = !lastError;
  if (lastError) {
    $("last-error-time").dateTime = lastError.at;
    $("last-error-time").textContent = formatTime(lastError.at);
    // The agent's own use of its mail failed, not a test: say which.
    const during = { reading: "Reading mail failed: ", sending: "Sending failed: " }[lastError.during];
    $("last-error-message").textContent = (during || "") + lastError.message;
    $("last-error-hint").textContent = lastError.hint || "";
  }
  const warnings = thisSaved ? view.warnings : [];
  $("warnings").hidden = warnings.length === 0;
  $("warning-list").replaceChildren(
    ...warnings.map((warning) => {
      const item = document.createElement("li");
      item.dataset.code = warning.code;
      const hint = Object.assign(document.createElement("span"), {
        className: "hint",
        textContent: warning.hint ? ` ${warning.hint}` : "",
      });
      item.append(warning.message, hint);
      return item;
    }),
  );
  $("test-result").hidden = !thisSaved || !$("test-result").hasChildNodes();
}

function renderTestMessage() {
  const connected = view.status === "connected";
  $("test-message").hidden = !connected;
  if (connected && !$("test-message-to").value) $("test-message-to").value = connectedAddress();
}

function renderTest(result) {
  const box = $("test-result");
  box.replaceChildren();
  const recorded = result.error && view.last_error && view.last_error.code === result.error.code;
  if (result.ok) {
    const stats = document.createElement("div");
    stats.className = "stats";
    const stat = (id, value, label) => {
      const item = document.createElement("div");
      item.className = "stat";
      item.append(Object.assign(document.createElement("strong"), { id, textContent: value }), label);
      return item;
    };
    stats.append(
      stat("inbox-total", result.inbox.total.toLocaleString(), "messages in the inbox"),
      stat("inbox-unread", result.inbox.unread.toLocaleString(), "unread"),
      // IMAP confirms the login it accepted (an address or not); OAuth, the account's address.
      stat("confirmed-email", result.login || result.email, result.login ? "login accepted" : "confirmed address"),
    );
    box.append(stats);
  } else if (!recorded) {
    // Not recorded as the last error (a save replaced the settings meanwhile): said here.
    const problem = Object.assign(document.createElement("p"), { id: "test-error", className: "result-error" });
    problem.append(result.error.message);
    if (result.error.hint) problem.append(" ", result.error.hint);
    box.append(problem);
  }
  const shown = recorded ? view.last_error.message : result.error && result.error.message;
  const checks = Object.assign(document.createElement("ul"), { id: "checks", className: "checks" });
  checks.append(
    ...result.checks.map((check) => {
      const detail = check.error && check.error.message !== shown ? `: ${check.error.message}` : "";
      const name = CHECK_NAMES[check.name] || check.name; // a check newer than this page
      return Object.assign(document.createElement("li"), {
        textContent: `${check.ok ? "✓" : "✗"} ${name}, ${check.latency_ms} ms${detail}`,
      });
    }),
  );
  box.append(checks);
  box.hidden = false;
}

function clearTestResult() {
  $("test-result").replaceChildren();
  $("test-result").hidden = true;
}

// ---- actions ----------------------------------------------------------------------------

async function load() {
  view = await api("GET", configPath);
  if (view.config) method = view.config.provider;
  render();
}

// The form's buttons wait while one of them runs; `button` shows that it is the one.
function running(button) {
  busy = true;
  button.setAttribute("aria-busy", "true");
  renderActions();
  return () => {
    busy = false;
    button.removeAttribute("aria-busy");
    renderActions();
  };
}

// A new action's outcome replaces the last one's.
function startAction() {
  unsay($("message"));
  hideAccountSwitch();
  clearTestResult();
}

// The question goes once answered or overtaken; the focus, if it was in it, goes back to
// the button that asked it.
function hideAccountSwitch() {
  const dialog = $("account-switch");
  const focused = dialog.contains(document.activeElement);
  dialog.hidden = true;
  if (focused) $("reauthorize").focus();
}

// The state after an action that took place: a reload that fails is said after the action's
// own outcome, not as the action's failure.
async function reloadAfter(place, kind, outcome) {
  try {
    await load();
  } catch (error) {
    say(place, "error", `${outcome} The page could not show the new status: ${error.message}`, error.hint);
    return;
  }
  say(place, kind, outcome);
}

// A blank field is left out of a body (JSON drops undefined): the API then says whether it is
// required. A blank password or client secret keeps the stored one.
const filled = (id) => $(id).value.trim() || undefined;

function imapBody() {
  const body = {
    provider: "imap",
    preset: $("preset").value,
    email: filled("email"),
    username: filled("username"),
    password: $("password").value || undefined,
  };
  if ($("preset").value === "custom") {
    for (const protocol of ["imap", "smtp"]) {
      const port = filled(`${protocol}-port`);
      body[protocol] = {
        host: filled(`${protocol}-host`),
        port: port && Number(port),
        security: $(`${protocol}-security`).value,
      };
    }
  }
  return body;
}

function oauthBody() {
  return {
    provider: method,
    client_id: filled("client-id"),
    client_secret: $("client-secret").value || undefined,
    tenant: method === "microsoft" ? filled("tenant") : undefined,
  };
}

// The form as it is: what is missing or wrong, the API says, all of it at once.
async function save(event) {
  event.preventDefault();
  if (busy) return;
  startAction();
  const message = $("message");
  clearFieldErrors($("config-form"));
  const saved = view.config;
  if (saved && saved.provider !== method) {
    const address = connectedAddress();
    const question =
      `Replace the agent's ${METHOD_NAMES[saved.provider]} connection${address ? ` (${address})` : ""} ` +
      `with ${METHOD_NAMES[method]}? The agent stops using that mailbox, and its stored credentials are deleted.`;
    if (!window.confirm(question)) {
      say(message, "info", `Nothing was saved: the ${METHOD_NAMES[saved.provider]} connection is kept.`);
      return;
    }
  }
  const done = running($("save"));
  try {
    view = await api("PUT", configPath, method === "imap" ? imapBody() : oauthBody());
    // The app is set up now: its steps fold, as a reload shows them, and the buttons come
    // near the status above.
    setupShownFor = null;
    render();
    const next = {
      configured: " Click Test Connection to check it.",
      awaiting_authorization:
        ` Click ${view.config.authorization ? "Re-authorize" : "Authorize"} ` +
        `to sign in with the agent's ${PROVIDER_NAMES[method]} account.`,
    };
    say(message, "success", `Configuration saved.${next[view.status] || ""}`);
  } catch (error) {
    reportFailure(error, "Not saved", message);
  } finally {
    done();
  }
}

async function authorize(route, switchAccount = false) {
  if (busy) return;
  // Open the popup first, inside the click, so that popup blockers allow it.
  const popup = window.open("about:blank", "mailbridge-oauth", "popup,width=520,height=680");
  startAction();
  const message = $("message");
  try {
    const body = { origin: API_ORIGIN, ...(switchAccount ? { switch_account: true } : {}) };
    const started = await api("POST", `${configPath}/${route}`, body);
    if (!popup) {
      say(message, "error", "The sign-in popup was blocked: allow popups for this page, then click Authorize again.");
      return;
    }
    popup.location.href = started.authorization_url;
    say(message, "info", `Sign in with the agent's ${PROVIDER_NAMES[method]} account in the popup.`);
  } catch (error) {
    if (popup) popup.close();
    reportFailure(error, "The sign-in could not start", message);
  }
}

// The popup's result: trusted only from the API's own origin and for this agent, and even
// then only as a cue to reload: what the page says comes from the server's state.
window.addEventListener("message", async (event) => {
  if (event.origin !== API_ORIGIN) return;
  const result = event.data;
  if (!result || result.type !== "mailbridge:oauth-result" || result.agentId !== agentId) return;
  const message = $("message");
  try {
    await load();
  } catch (error) {
    reportFailure(error, "The page could not reload the status", message);
    return;
  }
  // The status the sign-in changed, on the method's card; then the outcome, under the buttons.
  document.querySelector(`.method-state[data-method=${method}]`).scrollIntoView({ block: "nearest" });
  if (result.error && result.error.code === "account_mismatch") {
    // Nothing changed: replacing the connected mailbox takes the user's word, and a new
    // sign-in (the button's click opens its popup).
    unsay(message);
    $("account-switch-reason").textContent = result.error.message;
    $("account-switch-question").textContent =
      `Switch to ${result.email || "the other account"}? The old mailbox will be disconnected.`;
    $("account-switch").hidden = false;
    $("account-switch").scrollIntoView({ block: "nearest" });
    $("keep-account").focus(); // the answer that changes nothing
    return;
  }
  if (result.status === "connected" && view.status === "connected") {
    say(message, "success", `Connected as ${connectedAddress()}.`);
  } else if (result.status === "error" && result.error) {
    // Recorded as the last error, just below: not said twice.
    const recorded = view.last_error && view.last_error.code === result.error.code;
    say(message, "error", recorded ? "The sign-in failed." : `The sign-in failed: ${result.error.message}`);
  } else {
    say(message, "error", "The sign-in did not complete. Click Authorize to try again.");
  }
});

async function runTest() {
  if (busy) return;
  startAction();
  const message = $("message");
  say(message, "info", "Testing the connection…");
  const done = running($("test"));
  let result;
  try {
    result = await api("POST", `${configPath}/test`);
  } catch (error) {
    reportFailure(error, "The test could not run", message);
    return;
  } finally {
    done();
  }
  await reloadAfter(message, ...(result.ok ? ["success", "Connection works."] : ["error", "The test failed."]));
  renderTest(result);
}

async function sendTestMessage(event) {
  event.preventDefault();
  const button = $("send-test-message");
  if (button.ariaDisabled === "true") return;
  const result = $("test-message-result");
  clearFieldErrors($("test-message-form"));
  const to = $("test-message-to").value.trim();
  if (!to) {
    reportFailure({ field: "to", message: "Enter the recipient's address." }, "Not sent", result);
    return;
  }
  // aria-disabled rather than disabled: the focus stays on the button.
  button.ariaDisabled = "true";
  say(result, "info", "Sending…");
  let sent;
  try {
    // A new key per click: a retry of this request sends nothing twice, another click does.
    sent = await api(
      "POST",
      sendPath,
      {
        to: [to],
        subject: "Test message from your agent",
        text: "This message was sent from the Email tab to check that the agent can send mail.",
      },
      { "Idempotency-Key": crypto.randomUUID() },
    );
  } catch (error) {
    reportFailure(error, "Not sent", result);
    return;
  } finally {
    button.ariaDisabled = null;
  }
  // A refusal by the server may have changed the status.
  await reloadAfter(result, "success", `Sent to ${sent.recipients.join(", ")}.`);
}

async function disconnect() {
  if (busy) return;
  const saved = view.config;
  const address = connectedAddress();
  const question =
    `Disconnect the agent's ${METHOD_NAMES[saved.provider]} connection${address ? ` (${address})` : ""}? ` +
    "Its stored credentials are deleted.";
  if (!window.confirm(question)) return;
  startAction();
  const message = $("message");
  const done = running($("disconnect"));
  try {
    view = await api("DELETE", configPath);
    render();
    say(message, "success", "Disconnected.");
  } catch (error) {
    reportFailure(error, "Not disconnected", message);
  } finally {
    done();
  }
}

async function copyRedirectUri() {
  const uri = $("redirect-uri").textContent;
  try {
    await navigator.clipboard.writeText(uri);
    $("copy-status").textContent = "Copied.";
  } catch {
    // No clipboard access: select it, for the person's own copy.
    window.getSelection().selectAllChildren($("redirect-uri"));
    $("copy-status").textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
}

// Only the platform's own pages: a link handed in the fragment must not lead elsewhere.
function renderBackLink() {
  const back = params.get("back");
  if (!back) return;
  let url;
  try {
    url = new URL(back, window.location.href);
  } catch {
    return; // not a URL ("http://["): no link, and the tab still works
  }
  if (url.origin !== window.location.origin) return;
  $("back-link").href = url.href;
  $("back-link").hidden = false;
}

function chooseMethod(chosen) {
  method = chosen;
  unsay($("message"));
  hideAccountSwitch();
  clearFieldErrors($("config-form"));
  render();
}

async function start() {
  $("agent-id").textContent = agentId;
  renderBackLink();
  if (!token) {
    say($("page-message"), "error", TOKEN_PROBLEM);
    return;
  }
  document.querySelectorAll("input[name=method]").forEach((radio) =>
    radio.addEventListener("change", () => chooseMethod(radio.value)),
  );
  $("preset").addEventListener("change", () => {
    serversChosen = true;
    applyPreset(true);
  });
  $("email").addEventListener("input", discoverSoon);
  $("discovery-use").addEventListener("click", useDiscovery);
  for (const protocol of ["imap", "smtp"]) {
    for (const part of ["host", "port", "security"]) {
      $(`${protocol}-${part}`).addEventListener(part === "security" ? "change" : "input", () => {
        serversChosen = true;
      });
    }
  }
  // An edited field's error is the past.
  $("config-form").addEventListener("input", (event) => {
    if (event.target.hasAttribute("aria-invalid")) clearFieldError(event.target);
  });
  $("test-message-form").addEventListener("input", (event) => {
    if (event.target.hasAttribute("aria-invalid")) clearFieldError(event.target);
  });
  $("config-form").addEventListener("submit", save);
  $("authorize").addEventListener("click", () => authorize("authorize"));
  $("reauthorize").addEventListener("click", () => authorize("reauthorize"));
  $("switch-account").addEventListener("click", () => authorize("reauthorize", true));
  $("keep-account").addEventListener("click", () => {
    hideAccountSwitch();
    say($("message"), "info", "The connected mailbox was kept.");
  });
  $("test").addEventListener("click", runTest);
  $("disconnect").addEventListener("click", disconnect);
  $("copy-redirect-uri").addEventListener("click", copyRedirectUri);
  $("test-message-form").addEventListener("submit", sendTestMessage);
  try {
    presets = (await api("GET", "/bridge/email-presets")).presets;
    $("preset").replaceChildren(
      ...presets.map((preset) =>
        Object.assign(document.createElement("option"), { value: preset.id, textContent: preset.label }),
      ),
    );
    $("preset").value = presets.some((preset) => preset.id === FIRST_PRESET) ? FIRST_PRESET : presets[0].id;
    applyPreset(true);
    await load();
    $("workspace").hidden = false;
    document.body.dataset.ready = "true"; // for people and tests: the form now shows the server's state
  } catch (error) {
    say($("page-message"), "error", error.message, error.hint);
  }
}

// The agent and token live in the fragment: a new fragment is another agent's tab.
window.addEventListener("hashchange", () => window.location.reload());

start();
