/* Formpost proof of work: solves an ALTCHA challenge while the visitor types.

   One tag, anywhere on the page, and one element inside the form:
     <script src="https://forms.example/static/formpost-altcha.js" defer></script>
     <div data-formpost-challenge="https://forms.example/f/contact/challenge"></div>

   On the first focus, key or pointer press in the form it fetches the
   challenge, finds the number (SHA-256 via crypto.subtle, in a Web Worker
   where the page allows one) and puts the payload into a hidden input named
   "altcha", as the official ALTCHA widget does. It never delays or blocks
   sending: a post sent before the proof is ready goes without one, and is
   scored. Nothing is shown, announced or focusable. This same file is the
   worker's script on Formpost's own pages (it knows by having no document). */
(function () {
  "use strict";

  function same(a, b) {
    for (let i = 0; i < b.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  async function solve(c) {
    const encoder = new TextEncoder();
    const target = new Uint8Array(c.challenge.match(/../g).map((h) => parseInt(h, 16)));
    const max = c.maxnumber || c.maxNumber || 1e6;
    const began = Date.now();
    // A thousand digests in flight at once: crypto.subtle is asynchronous,
    // one at a time would spend most of the time waiting.
    for (let n = 0; n <= max; n += 1000) {
      const jobs = [];
      for (let i = n; i <= Math.min(n + 999, max); i++) {
        jobs.push(crypto.subtle.digest(c.algorithm, encoder.encode(c.salt + i)));
      }
      const hashes = await Promise.all(jobs);
      for (let k = 0; k < hashes.length; k++) {
        if (same(new Uint8Array(hashes[k]), target)) {
          return { number: n + k, took: Date.now() - began };
        }
      }
    }
    return null;
  }

  if (typeof document === "undefined") {
    self.onmessage = async (event) => self.postMessage(await solve(event.data));
    return;
  }

  const script = document.currentScript;
  const own = script && script.src ? new URL(script.src, location.href) : null;

  function worker() {
    if (own && own.origin === location.origin) return new Worker(own.href);
    // A worker must come from the page's origin: on another site, build it
    // from these functions (a page whose CSP refuses blob: workers solves
    // on the main thread instead, which crypto.subtle keeps responsive).
    const source = `"use strict";${same}\n${solve}\n` +
      "self.onmessage=async(e)=>self.postMessage(await solve(e.data));";
    return new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })));
  }

  function solveSomewhere(challenge) {
    return new Promise((resolve, reject) => {
      const w = worker();
      w.onmessage = (event) => { w.terminate(); resolve(event.data); };
      w.onerror = (event) => { w.terminate(); event.preventDefault(); reject(event); };
      w.postMessage(challenge);
    }).catch(() => solve(challenge));
  }

  function setUp(holder) {
    const form = holder.closest("form");
    if (!form || holder.querySelector("input") || form.elements.namedItem("altcha")) return;
    holder.hidden = true;
    holder.setAttribute("aria-hidden", "true");
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = "altcha";
    holder.append(input);
    let busy = false;
    let retryAt = 0;
    let timer = 0;

    function reset() {
      clearTimeout(timer);
      input.value = "";
    }

    function start(event) {
      // A press on the send button is the send itself: too late to begin.
      if (event && event.target.closest("button, [type=submit], [type=image]")) return;
      if (busy || input.value || Date.now() < retryAt) return;
      busy = true;
      fetch(holder.dataset.formpostChallenge, { credentials: "omit", cache: "no-store" })
        .then((reply) => {
          if (!reply.ok) throw new Error(`challenge: HTTP ${reply.status}`);
          return reply.json();
        })
        .then((c) => solveSomewhere(c).then((found) => {
          if (!found) throw new Error("challenge: no solution");
          input.value = btoa(JSON.stringify({
            algorithm: c.algorithm, challenge: c.challenge, number: found.number,
            salt: c.salt, signature: c.signature, took: found.took,
          }));
          // A minute before it runs out, solve a fresh one (the page is open).
          const life = Math.max(120, c.expiresIn || 1200) - 60;
          timer = setTimeout(() => { reset(); start(); }, life * 1000);
        }))
        .catch(() => { retryAt = Date.now() + 30000; })
        .finally(() => { busy = false; });
    }

    for (const type of ["focusin", "pointerdown", "keydown", "input"]) {
      form.addEventListener(type, start, { passive: true });
    }
    // Each proof is accepted once: after a send (a page that posts with
    // fetch stays open), the next keystroke solves a new one.
    form.addEventListener("submit", () => setTimeout(reset, 0));
    if (form.contains(document.activeElement)) start();
  }

  function setUpAll() {
    document.querySelectorAll("[data-formpost-challenge]").forEach(setUp);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUpAll);
  } else {
    setUpAll();
  }
})();
