// The console's only script (CSP: script-src 'self', nothing inline).
// Copy buttons for the forms page's snippets, and forms that post once.
// Their words come translated from the page (data-copied, data-busy, ...).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (navigator.clipboard) {
    for (const button of document.querySelectorAll("button[data-copy]")) {
      const source = document.getElementById(button.dataset.copy);
      if (!source) continue;
      button.hidden = false;
      button.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(source.textContent);
          button.textContent = button.dataset.copied || "Copied";
        } catch (error) {
          button.textContent = button.dataset.copyFailed || "Select and copy by hand";
        }
      });
    }
  }
  // A second click while the first post is under way would only wait for it.
  for (const form of document.querySelectorAll("form[data-once]")) {
    form.addEventListener("submit", () => {
      for (const button of form.querySelectorAll("button")) {
        button.disabled = true;
        button.textContent = form.dataset.busy || "Running the checks…";
      }
    });
  }
});
