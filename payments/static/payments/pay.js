// The payment page: charges through POST /api/v1/charges with the session, polls /health/,
// and lists the user's recent charges. Plain JavaScript, no build step.
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
  const newPaymentButton = document.getElementById("new-payment-button");
  const amountInput = document.getElementById("amount");
  const currencySelect = document.getElementById("currency");
  const descriptionInput = document.getElementById("description");
  const sourceInput = document.getElementById("source");
  const badge = document.getElementById("health-badge");
  const recentList = document.getElementById("recent-list");
  const recentStatus = document.getElementById("recent-status");

  const chargesUrl = form.dataset.chargesUrl;
  const loginUrl = form.dataset.loginUrl;
  const maxAmount = Number(form.dataset.maxAmount);
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const minorDigits = new Map(
    Array.from(currencySelect.options, (option) => [option.value, Number(option.dataset.digits)]),
  );

  // phase: "form" (editable), "sending", "retryable" (same key may be resent), "done" (start anew).
  // attempt: the idempotency key and the exact body sent with it; a key never carries another body.
  const state = { phase: "form", attempt: null };

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
    fields.disabled = state.phase !== "form";
    payButton.disabled = state.phase !== "form";
    payButton.textContent = sending ? "Paying…" : "Pay";
    form.setAttribute("aria-busy", String(sending));
    outcomeActions.hidden = state.phase === "form" || sending;
    retryButton.hidden = state.phase !== "retryable";
  }

  function showOutcome(result) {
    const children = [element("h2", { class: "outcome-title" }, [result.title])];
    result.lines.forEach((line) => children.push(element("p", {}, Array.isArray(line) ? line : [line])));
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

  const DECLINE_REASONS = {
    insufficient_funds: "The card has insufficient funds.",
    generic_decline: "The card issuer declined the payment.",
  };

  function retryAfterText(response) {
    const seconds = Number(response.headers.get("Retry-After"));
    return seconds > 0 ? `Try again in ${seconds} second${seconds === 1 ? "" : "s"}.` : "Try again in a moment.";
  }

  function loginLink() {
    return element("a", { href: loginUrl }, ["Log in again"]);
  }

  function describe(response, body) {
    if (!response) {
      return {
        tone: "warning", next: "retryable", title: "No answer from Paymentsite",
        lines: ["We could not reach Paymentsite, so we do not know yet whether the payment went through. "
          + "You will not be charged twice: Try again is safe."],
      };
    }
    if (response.status === 201 && body && body.status === "succeeded") {
      return {
        tone: "success", next: "done", title: "Payment received",
        lines: [`Thank you. ${formatMinor(body.amount, body.currency)} was charged to your card.`],
        receipt: body,
      };
    }
    const error = (body && body.error) || {};
    switch (error.type) {
      case "card_error":
        return {
          tone: "error", next: "done", title: "Card declined",
          lines: [`Your card was declined. ${DECLINE_REASONS[error.decline_code] || error.message || ""}`.trim(),
            "You have not been charged. Start a new payment with another card, or ask your card issuer."],
        };
      case "provider_timeout":
        return {
          tone: "warning", next: "retryable", title: "We are checking the payment",
          lines: ["The payment provider did not answer in time. You have not been charged twice; "
            + "we are checking the payment. Try again is safe."],
        };
      case "provider_error":
      case "provider_connection_error":
        return {
          tone: "warning", next: "retryable", title: "The payment did not go through",
          lines: [error.type === "provider_error"
            ? "The payment provider had an error and did not complete the payment."
            : "We could not reach the payment provider.",
          "You have not been charged. Try again is safe: this payment can never be charged twice."],
        };
      case "provider_unavailable":
        return {
          tone: "warning", next: "retryable", title: "Payments are unavailable right now",
          lines: ["The payment provider is not responding, so we did not send your payment. "
            + "You have not been charged.", retryAfterText(response)],
        };
      case "database_busy":
        return {
          tone: "warning", next: "retryable", title: "Paymentsite is busy",
          lines: ["We could not start the payment because the service is busy. You have not been charged.",
            retryAfterText(response)],
        };
      case "idempotency_error":
        if (error.code === "request_in_progress") {
          return {
            tone: "warning", next: "retryable", title: "Still processing",
            lines: ["This payment is still being processed. You will not be charged twice. "
              + "Do not start a new payment: Try again in a few seconds to see the result."],
          };
        }
        return {
          tone: "error", next: "done", title: "Payment details changed",
          lines: ["This payment was already sent with different details, so it was not sent again. "
            + "Check your recent payments before you start a new payment."],
        };
      case "charge_canceled":
        return {
          tone: "error", next: "done", title: "Payment canceled",
          lines: ["Our support team canceled this payment. You have not been charged. "
            + "Start a new payment if you still want to pay."],
        };
      case "invalid_request":
        return {
          tone: "error", next: "form", title: "Check the payment details",
          lines: ["Nothing was charged.", ...Object.entries(error.fields || {}).map(
            ([name, messages]) => `${name}: ${[].concat(messages).join(" ")}`,
          )],
          fields: error.fields || {},
        };
      case "authentication_error":
      case "permission_error":
        return {
          tone: "error", next: "done", title: "You are signed out",
          lines: ["Your session has ended, so the payment was not sent. You have not been charged.",
            [loginLink(), ", then pay again."]],
        };
      default:
        break;
    }
    if (response.status >= 500) {
      return {
        tone: "warning", next: "retryable", title: "Something went wrong on our side",
        lines: ["We do not know yet whether the payment went through. "
          + "You will not be charged twice: Try again is safe."],
      };
    }
    return {
      tone: "error", next: "done", title: "The payment was refused",
      lines: [`${error.message || `The request was refused (HTTP ${response.status}).`} You have not been charged.`,
        "Start a new payment; contact support if this happens again."],
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

  async function post(attempt) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(chargesUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRFToken": csrfToken,
          "Idempotency-Key": attempt.key,
        },
        body: JSON.stringify(attempt.body),
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

  async function send(attempt) {
    if (state.phase === "sending") return;
    state.phase = "sending";
    state.attempt = attempt;
    render();
    showOutcome({ tone: "pending", title: "Processing your payment…", lines: ["Please keep this page open."] });
    const { response, body } = await post(attempt);
    const result = describe(response, body);
    state.phase = result.next;
    if (result.next === "form") state.attempt = null;
    render();
    showOutcome(result);
    if (result.fields) {
      const shown = Object.entries(result.fields).filter(([name, messages]) => showFieldError(
        name, [].concat(messages).join(" "),
      ));
      (shown.length ? document.getElementById(shown[0][0]) : amountInput).focus();
    } else {
      (result.next === "retryable" ? retryButton : newPaymentButton).focus();
    }
    refreshRecent();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.phase !== "form") return;
    const read = readForm();
    if (read.errors) {
      showInvalid(read.errors);
      return;
    }
    send({ key: newIdempotencyKey(), body: read.body });
  });

  retryButton.addEventListener("click", () => {
    if (state.phase === "retryable" && state.attempt) send(state.attempt);
  });

  newPaymentButton.addEventListener("click", () => {
    if (state.phase === "sending") return;
    state.phase = "form";
    state.attempt = null;
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
    failed: "Not completed",
    pending: "Processing",
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

  // The health contract of DESIGN.md: application/health+json, 503 when status is "fail".
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
