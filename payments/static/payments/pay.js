// The payment page: charges through POST /api/v1/charges with the session (and cancels through
// POST /api/v1/charges/{id}/cancel), polls /health/, and lists the user's recent charges.
// Plain JavaScript, no build step.
(() => {
  "use strict";

  const REQUEST_TIMEOUT_MS = 60000;
  const HEALTH_TIMEOUT_MS = 4000;
  const RECENT_LIMIT = 10;

  const form = document.getElementById("pay-form");
  if (!form) return;
  const fields = document.getElementById("pay-fields");
  const payButton = document.getElementById("pay-button");
  const outcome = document.getElementById("outcome");
  const outcomeActions = document.getElementById("outcome-actions");
  const retryButton = document.getElementById("retry-button");
  const cancelButton = document.getElementById("cancel-button");
  const newPaymentButton = document.getElementById("new-payment-button");
  const actionButtons = { retry: retryButton, cancel: cancelButton, new: newPaymentButton };
  const amountInput = document.getElementById("amount");
  const currencySelect = document.getElementById("currency");
  const descriptionInput = document.getElementById("description");
  const sourceInput = document.getElementById("source");
  const badge = document.getElementById("health-badge");
  const recentList = document.getElementById("recent-list");
  const recentStatus = document.getElementById("recent-status");

  const chargesUrl = form.dataset.chargesUrl;
  const cancelUrlTemplate = form.dataset.cancelUrl;
  const loginUrl = form.dataset.loginUrl;
  const maxAmount = Number(form.dataset.maxAmount);
  // While a payment is being verified, read it again this often, for at most VERIFY_FOR_MS: each
  // read may ask the provider (PAYMENT_LOOKUP_ON_READ_S), so the page learns the outcome as soon
  // as the service does. 0: never.
  const verifyPollMs = Number(form.dataset.verifyPollMs) || 0;
  const VERIFY_FOR_MS = 5 * 60 * 1000;
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const minorDigits = new Map(
    Array.from(currencySelect.options, (option) => [option.value, Number(option.dataset.digits)]),
  );

  // phase: "form" (editable), "sending", "result" (an answer is shown with its actions), "canceling".
  // attempt: the idempotency key and the exact body sent with it; a key never carries another body.
  // transaction: the payment the answer was about (to cancel it). actions: the buttons offered.
  const state = { phase: "form", attempt: null, transaction: null, actions: [] };

  // Money ------------------------------------------------------------------

  function digitsOf(currency) {
    return minorDigits.has(currency) ? minorDigits.get(currency) : 2;
  }

  function groupThousands(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function formatMinor(amount, currency) {
    const digits = digitsOf(currency);
    const text = String(amount).padStart(digits + 1, "0");
    const whole = groupThousands(text.slice(0, text.length - digits));
    return digits ? `${whole}.${text.slice(text.length - digits)} ${currency}` : `${whole} ${currency}`;
  }

  // "19.99" -> 1999 by string arithmetic: parseFloat("19.99") * 100 is 1998.9999999999998.
  function toMinorUnits(text, currency) {
    const digits = digitsOf(currency);
    const match = /^(\d*)(?:\.(\d*))?$/.exec(text.trim());
    if (!match || (match[1] + (match[2] || "")) === "") {
      return { error: `Enter the amount as a number, for example ${digits ? "19.99" : "1999"}.` };
    }
    const fraction = match[2] || "";
    if (fraction.length > digits) {
      return {
        error: digits
          ? `${currency} amounts have at most ${digits} digits after the decimal point.`
          : `${currency} amounts are whole numbers, without a decimal point.`,
      };
    }
    const minorText = (match[1] + fraction.padEnd(digits, "0")).replace(/^0+(?=\d)/, "");
    if (/^0*$/.test(minorText)) return { error: "Enter an amount greater than zero." };
    if (minorText.length > 15 || Number(minorText) > maxAmount) {
      return { error: `The most you can pay at once is ${formatMinor(maxAmount, currency)}.` };
    }
    return { amount: Number(minorText) };
  }

  function newIdempotencyKey() {
    const cryptoApi = window.crypto;
    if (cryptoApi && typeof cryptoApi.randomUUID === "function") return cryptoApi.randomUUID();
    // randomUUID needs a secure context (https or localhost); build a version 4 UUID by hand.
    const bytes = new Uint8Array(16);
    if (cryptoApi && typeof cryptoApi.getRandomValues === "function") {
      cryptoApi.getRandomValues(bytes);
    } else {
      for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  // Rendering ----------------------------------------------------------------

  function element(tag, attributes, children) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([name, value]) => node.setAttribute(name, value));
    (children || []).forEach((child) => node.append(child));
    return node;
  }

  function render() {
    const sending = state.phase === "sending";
    const canceling = state.phase === "canceling";
    fields.disabled = state.phase !== "form";
    payButton.disabled = state.phase !== "form";
    payButton.textContent = sending ? "Paying…" : "Pay";
    form.setAttribute("aria-busy", String(sending));
    outcomeActions.hidden = !(state.phase === "result" || canceling);
    outcomeActions.setAttribute("aria-busy", String(canceling));
    Object.entries(actionButtons).forEach(([action, button]) => {
      button.hidden = !state.actions.includes(action);
      button.disabled = canceling;
    });
    cancelButton.textContent = canceling ? "Canceling…" : "Cancel payment";
  }

  function showOutcome(result) {
    const children = [element("h2", { class: "outcome-title" }, [result.title])];
    result.lines.filter((line) => line && line.length).forEach(
      (line) => children.push(element("p", {}, Array.isArray(line) ? line : [line])),
    );
    if (result.receipt) children.push(receiptList(result.receipt));
    outcome.className = `outcome outcome-${result.tone}`;
    outcome.replaceChildren(element("div", {}, children));
  }

  function receiptList(txn) {
    const rows = [
      ["Amount", formatMinor(txn.amount, txn.currency)],
      ["Transaction ID", txn.id],
      ["Card", txn.source],
    ];
    if (txn.description) rows.push(["Description", txn.description]);
    if (txn.provider_charge_id) rows.push(["Provider reference", txn.provider_charge_id]);
    const list = element("dl", { class: "receipt" });
    rows.forEach(([term, value]) => {
      list.append(element("dt", {}, [term]), element("dd", { "data-field": term }, [String(value)]));
    });
    return list;
  }

  function clearFieldErrors() {
    form.querySelectorAll(".field-error").forEach((node) => {
      node.hidden = true;
      node.textContent = "";
    });
    form.querySelectorAll("[aria-invalid]").forEach((node) => node.removeAttribute("aria-invalid"));
  }

  function showFieldError(name, message) {
    const input = document.getElementById(name);
    const error = document.getElementById(`${name}-error`);
    if (!input || !error) return false;
    input.setAttribute("aria-invalid", "true");
    error.textContent = message;
    error.hidden = false;
    return true;
  }

  // What the API's answer means to the person paying --------------------------
  //
  // The words come from the service's one outcome table (payments/outcomes/charges.py, `page` column),
  // which the page embeds as JSON; this file only decides the heading, the tone and which
  // actions to offer. "retry" resends the same Idempotency-Key (it never charges twice),
  // "cancel" stops a payment that was not charged, "new" starts over with a new key. "new" is
  // never offered while the payment may have been charged or may still be sent by the service:
  // a second payment could then charge the payer twice.

  const ANSWERS = JSON.parse(document.getElementById("outcome-pages").textContent);

  const VIEWS = {
    succeeded: { tone: "success", title: "Payment received", actions: ["new"] },
    declined: { tone: "error", title: "Card declined", actions: ["new"] },
    rejected: { tone: "error", title: "Card details refused", actions: ["new"] },
    outcome_unknown: { tone: "warning", title: "We are checking this payment", actions: ["retry"] },
    retry_scheduled: { tone: "warning", title: "The payment will be tried again", actions: ["retry", "cancel"] },
    needs_review: { tone: "error", title: "The payment could not be completed", actions: ["cancel"] },
    provider_unavailable: { tone: "warning", title: "Payments are unavailable right now", actions: ["retry", "new"] },
    in_progress: { tone: "warning", title: "Still processing", actions: ["retry"] },
    key_reused: { tone: "error", title: "Payment details changed", actions: ["new"] },
    canceled: { tone: "neutral", title: "Payment canceled", actions: ["new"] },
    database_busy: { tone: "warning", title: "Paymentsite is busy", actions: ["retry", "new"] },
    database_unavailable: { tone: "warning", title: "Paymentsite is busy", actions: ["retry", "new"] },
    not_cancelable: { tone: "warning", title: "The payment was not canceled", actions: ["retry"] },
    invalid_request: { tone: "error", title: "Check the payment details", actions: [] },
    internal_error: { tone: "warning", title: "Something went wrong on our side", actions: ["retry"] },
  };

  const DECLINE_REASONS = {
    insufficient_funds: "The card has insufficient funds.",
    generic_decline: "The card issuer declined the payment.",
  };

  // The table's row for an API error: its exact type and code, else the row whose code names
  // the cause (`<cause>`), else the row named like the type.
  function answerNameFor(error) {
    const match = ANSWERS.find((row) => row.type === error.type && row.code === error.code)
      || ANSWERS.find((row) => row.type === error.type && row.code === "<cause>")
      || ANSWERS.find((row) => row.type === error.type && row.name === error.type);
    return match ? match.name : null;
  }

  function pageText(name) {
    const row = ANSWERS.find((candidate) => candidate.name === name);
    return row ? row.page : "";
  }

  function view(name, details, extra) {
    return { name, ...VIEWS[name], lines: [pageText(name), ...(details || [])], ...(extra || {}) };
  }

  function retryAfterText(response) {
    const seconds = Number(response.headers.get("Retry-After"));
    return seconds > 0 ? `Try again in ${seconds} second${seconds === 1 ? "" : "s"}.` : "";
  }

  function localTime(iso) {
    const when = new Date(iso);
    if (!iso || Number.isNaN(when.getTime())) return null;
    const text = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    return element("time", { datetime: iso }, [text]);
  }

  function referenceLine(txn) {
    return txn && txn.id ? `Payment reference: ${txn.id}` : "";
  }

  function loginLink() {
    return element("a", { href: loginUrl }, ["Log in again"]);
  }

  function describe(response, body) {
    if (!response) {
      // The request may have reached Paymentsite, and the provider: the outcome is unknown.
      return view("outcome_unknown", [], { title: "No answer from Paymentsite" });
    }
    if (response.status === 201 && body && body.status === "succeeded") {
      return view("succeeded", [], {
        lines: [`Thank you. ${formatMinor(body.amount, body.currency)} was charged to your card.`],
        receipt: body,
        transaction: body,
      });
    }
    const error = (body && body.error) || {};
    const txn = (body && body.transaction) || null;
    // The service answers needs_review itself whenever nothing will send the payment again.
    const name = answerNameFor(error);
    switch (name) {
      case "declined":
        return view(name, [DECLINE_REASONS[error.decline_code] || ""], { transaction: txn });
      case "retry_scheduled": {
        const at = localTime(txn.next_step.at || txn.next_retry_at);
        return view(name, [at ? ["Next automatic try: ", at, "."] : "", referenceLine(txn)], { transaction: txn });
      }
      case "outcome_unknown":
      case "needs_review":
      case "internal_error":
        return view(name, [referenceLine(txn)], { transaction: txn });
      case "in_progress":
      case "provider_unavailable":
      case "database_busy":
      case "database_unavailable":
        return view(name, [retryAfterText(response)], { transaction: txn });
      case "invalid_request":
        return view(name, Object.entries(error.fields || {}).map(
          ([field, messages]) => `${field}: ${[].concat(messages).join(" ")}`,
        ), { next: "form", fields: error.fields || {} });
      case null:
        break;
      default:
        return view(name, [], { transaction: txn });
    }
    if (error.type === "authentication_error" || error.type === "permission_error") {
      return {
        tone: "error", title: "You are signed out", actions: ["new"],
        lines: ["Your session has ended, so the payment was not sent. You have not been charged.",
          [loginLink(), ", then pay again."]],
      };
    }
    if (response.status >= 500 || !body) {
      // An answer the service did not write (a proxy's page, say): the outcome is unknown.
      return view("internal_error");
    }
    return {
      tone: "error", title: "The payment was refused", actions: error.retryable ? ["retry", "new"] : ["new"],
      lines: [`${error.message || `The request was refused (HTTP ${response.status}).`} You have not been charged.`],
    };
  }

  // What a cancel's answer means: canceled, refused (with the reason), or not known.
  function describeCancel(response, body) {
    if (response && response.ok && body && body.status === "canceled") {
      return view("canceled", ["It will never be sent again, so nothing will be charged.", referenceLine(body)], {
        transaction: body,
      });
    }
    const error = (body && body.error) || {};
    if (response && answerNameFor(error) === "not_cancelable") {
      return view("not_cancelable", [error.message || ""], { transaction: body.transaction });
    }
    const signedOut = error.type === "authentication_error" || error.type === "permission_error";
    return {
      tone: "warning", title: "The payment was not canceled", actions: ["retry", "cancel"],
      lines: ["We could not confirm that the payment was canceled. Cancel payment again, or Try again.",
        signedOut ? [loginLink(), " first: your session has ended."] : error.message || "",
        referenceLine(state.transaction)],
    };
  }

  // Sending ------------------------------------------------------------------

  function readForm() {
    clearFieldErrors();
    const currency = currencySelect.value;
    const parsed = toMinorUnits(amountInput.value, currency);
    const source = sourceInput.value.trim();
    const errors = [];
    if (parsed.error) errors.push(["amount", parsed.error]);
    if (!source) errors.push(["source", "Enter a card token."]);
    if (errors.length) return { errors };
    return {
      body: { amount: parsed.amount, currency, description: descriptionInput.value.trim(), source },
    };
  }

  function showInvalid(errors) {
    errors.forEach(([name, message]) => showFieldError(name, message));
    showOutcome({
      tone: "error", title: "Check the payment details",
      lines: errors.map(([name, message]) => `${name[0].toUpperCase()}${name.slice(1)}: ${message}`),
    });
    const first = document.getElementById(errors[0][0]);
    if (first) first.focus();
  }

  // The API with the session: the CSRF token, JSON, and a time limit. No answer is { response: null }.
  async function postJson(url, headers, payload) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken, ...headers },
        body: payload === undefined ? undefined : JSON.stringify(payload),
        signal: controller.signal,
      });
      const body = await response.json().catch(() => null);
      return { response, body };
    } catch (error) {
      return { response: null, body: null };
    } finally {
      clearTimeout(timer);
    }
  }

  // What a read of the payment (GET /api/v1/charges/{id}) means, in the words of a charge's answer.
  function describeRead(txn) {
    if (txn.status === "succeeded") return describe({ status: 201 }, txn);
    return describe({ status: 200 }, { error: txn.error || {}, transaction: txn });
  }

  let verifyTimer = null;
  function watchWhileVerifying(txn) {
    clearTimeout(verifyTimer);
    if (!verifyPollMs || !txn || txn.status !== "unknown") return;
    const until = Date.now() + VERIFY_FOR_MS;
    const check = async () => {
      if (state.phase !== "result" || !state.transaction || state.transaction.id !== txn.id) return;
      const read = await getJson(`${chargesUrl}/${encodeURIComponent(txn.id)}`);
      const now = read.body && read.body.id === txn.id ? read.body : null;
      if (now && now.status !== "unknown" && now.status !== "pending") {
        if (state.phase === "result" && state.transaction && state.transaction.id === txn.id) showResult(describeRead(now));
        return;
      }
      if (Date.now() < until) verifyTimer = setTimeout(check, verifyPollMs);
    };
    verifyTimer = setTimeout(check, verifyPollMs);
  }

  async function getJson(url) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, signal: controller.signal });
      return { response, body: await response.json().catch(() => null) };
    } catch (error) {
      return { response: null, body: null };
    } finally {
      clearTimeout(timer);
    }
  }

  function showResult(result) {
    state.phase = result.next || "result";
    state.actions = result.actions || [];
    if (result.transaction) state.transaction = result.transaction;
    if (state.phase === "form") state.attempt = null;
    render();
    showOutcome(result);
    if (result.fields) {
      const shown = Object.entries(result.fields).filter(([name, messages]) => showFieldError(
        name, [].concat(messages).join(" "),
      ));
      (shown.length ? document.getElementById(shown[0][0]) : amountInput).focus();
    } else if (state.actions.length) {
      actionButtons[state.actions[0]].focus();
    }
    refreshRecent();
    watchWhileVerifying(state.phase === "result" ? state.transaction : null);
  }

  async function send(attempt) {
    if (state.phase === "sending" || state.phase === "canceling") return;
    state.phase = "sending";
    state.attempt = attempt;
    render();
    showOutcome({ tone: "pending", title: "Processing your payment…", lines: ["Please keep this page open."] });
    const { response, body } = await postJson(chargesUrl, { "Idempotency-Key": attempt.key }, attempt.body);
    showResult(describe(response, body));
  }

  async function cancelPayment() {
    if (state.phase !== "result" || !state.transaction) return;
    state.phase = "canceling";
    render();
    const url = cancelUrlTemplate.replace("TRANSACTION_ID", encodeURIComponent(state.transaction.id));
    const { response, body } = await postJson(url, {});
    showResult(describeCancel(response, body));
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.phase !== "form") return;
    const read = readForm();
    if (read.errors) {
      showInvalid(read.errors);
      return;
    }
    state.transaction = null;
    send({ key: newIdempotencyKey(), body: read.body });
  });

  retryButton.addEventListener("click", () => {
    if (state.phase === "result" && state.actions.includes("retry") && state.attempt) send(state.attempt);
  });

  cancelButton.addEventListener("click", () => {
    if (state.actions.includes("cancel")) cancelPayment();
  });

  newPaymentButton.addEventListener("click", () => {
    if (state.phase !== "result" || !state.actions.includes("new")) return;
    state.phase = "form";
    state.attempt = null;
    state.transaction = null;
    state.actions = [];
    outcome.replaceChildren();
    outcome.className = "outcome";
    clearFieldErrors();
    render();
    amountInput.focus();
  });

  // Recent payments ------------------------------------------------------------

  const STATUS_LABELS = {
    succeeded: "Succeeded",
    declined: "Declined",
    failed: "Not charged",
    pending: "Processing",
    unknown: "Being verified",
    canceled: "Canceled",
  };

  async function refreshRecent() {
    try {
      const response = await fetch(chargesUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const page = await response.json();
      const items = page.results.slice(0, RECENT_LIMIT).map(recentItem);
      recentList.replaceChildren(...items);
      recentStatus.textContent = items.length ? "" : "No payments yet.";
      recentStatus.hidden = items.length > 0;
    } catch (error) {
      recentStatus.textContent = "Your recent payments could not be loaded.";
      recentStatus.hidden = false;
    }
  }

  function recentItem(txn) {
    const created = new Date(txn.created_at);
    const label = STATUS_LABELS[txn.status] || txn.status;
    return element("li", { class: "recent-item", "data-transaction-id": txn.id }, [
      element("span", { class: "recent-amount" }, [formatMinor(txn.amount, txn.currency)]),
      element("span", { class: `status status-${txn.status}` }, [label]),
      element("span", { class: "recent-meta" }, [
        `${txn.description || "No description"} · `,
        element("time", { datetime: txn.created_at }, [created.toLocaleString()]),
      ]),
    ]);
  }

  // Service status badge ---------------------------------------------------------

  const BADGES = {
    normal: "All systems normal",
    slow: "Payments are slow",
    unavailable: "Payments unavailable",
    unknown: "Payment status unknown",
  };

  function firstCheck(health, name) {
    const checks = (health.checks && health.checks[name]) || [];
    return checks[0] || {};
  }

  // /health/ (README, "Health and metrics"): application/health+json, 503 when status is "fail".
  function badgeFor(response, health) {
    if (!response) return "unavailable";
    if (!health || typeof health.status !== "string") return response.status >= 500 ? "unavailable" : "unknown";
    const circuitOpen = firstCheck(health, "payment-provider:circuit").observedValue === "open";
    const providerFailing = firstCheck(health, "payment-provider:responseTime").status === "fail";
    if (health.status === "fail" || circuitOpen || providerFailing) return "unavailable";
    return health.status === "warn" ? "slow" : "normal";
  }

  function showBadge(kind) {
    if (badge.dataset.state === kind) return; // unchanged: nothing new to announce
    badge.dataset.state = kind;
    badge.className = `badge badge-${kind}`;
    badge.textContent = BADGES[kind];
  }

  async function pollHealth() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), HEALTH_TIMEOUT_MS);
    let response = null;
    let health = null;
    try {
      response = await fetch(badge.dataset.healthUrl, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/health+json, application/json" },
        signal: controller.signal,
      });
      health = await response.json().catch(() => null);
    } catch (error) {
      response = null;
    } finally {
      clearTimeout(timer);
    }
    showBadge(badgeFor(response, health));
    setTimeout(pollHealth, Number(badge.dataset.pollMs) || 5000);
  }

  render();
  refreshRecent();
  pollHealth();
})();
