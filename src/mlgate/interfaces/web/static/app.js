// mlgate web UI: small progressive enhancements. Every form works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Reject needs a reason: say so before the round trip (the server checks it too).
  document.querySelectorAll("button[data-needs-comment]").forEach((button) => {
    button.addEventListener("click", (event) => {
      const comment = button.form && button.form.querySelector("textarea[name=comment]");
      if (comment && !comment.value.trim()) {
        event.preventDefault();
        comment.setCustomValidity("Give the reason for rejecting.");
        comment.reportValidity();
        comment.focus();
      }
    });
  });
  document.querySelectorAll("textarea[name=comment]").forEach((comment) => {
    comment.addEventListener("input", () => comment.setCustomValidity(""));
  });

  // Traffic weights: show their sum as they are typed.
  document.querySelectorAll("form[data-sum]").forEach((form) => {
    const target = Number(form.dataset.sum);
    const out = form.querySelector("#weight-sum");
    const inputs = form.querySelectorAll("input[type=number]");
    const update = () => {
      let sum = 0;
      inputs.forEach((input) => { sum += Number(input.value || 0); });
      if (out) {
        out.textContent = sum === target ? `Sum: ${sum}%` : `Sum: ${sum}% (must be ${target}%)`;
        out.classList.toggle("bad-text", sum !== target);
      }
    };
    inputs.forEach((input) => input.addEventListener("input", update));
    update();
  });

  // Forms that change what callers get ask first.
  document.querySelectorAll("button[data-confirm]").forEach((button) => {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  });
});
