// Review page keyboard shortcuts and the Grad-CAM toggle. No dependencies, nothing fetched from elsewhere.
"use strict";

function toggleGradcam() {
  const button = document.getElementById("gradcam-toggle");
  if (!button) return;
  let overlay = document.getElementById("gradcam");
  if (!overlay) {  // made on first use: the heatmap is computed on request, and no empty image is ever shown
    overlay = document.createElement("img");
    overlay.id = "gradcam";
    overlay.className = "overlay";
    overlay.alt = "Grad-CAM heatmap";
    overlay.hidden = true;
    overlay.src = button.dataset.src;
    document.getElementById(button.getAttribute("aria-controls")).appendChild(overlay);
  }
  overlay.hidden = !overlay.hidden;
  button.setAttribute("aria-pressed", String(!overlay.hidden));
}

function acceptModel(form) {
  form.querySelectorAll("input[name=labels]").forEach((box) => { box.checked = box.dataset.model === "1"; });
  form.requestSubmit();
}

function follow(id) {
  const link = document.getElementById(id);
  if (link) window.location.href = link.href;
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("review-form");
  const toggle = document.getElementById("gradcam-toggle");
  const accept = document.getElementById("accept");
  if (toggle) toggle.addEventListener("click", toggleGradcam);
  if (accept && form) accept.addEventListener("click", () => acceptModel(form));
  document.querySelectorAll("form.filters").forEach((filters) => {
    filters.addEventListener("submit", () => {  // leave empty filters out of the URL
      filters.querySelectorAll("input, select").forEach((field) => { if (!field.value) field.disabled = true; });
    });
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest && target.closest("textarea, select, input:not([type=checkbox])")) return;
    const key = event.key;
    if (form && /^[1-9]$/.test(key)) {
      const box = form.querySelector(`input[data-key="${key}"]`);
      if (box) { box.checked = !box.checked; event.preventDefault(); }
    } else if (form && key === "a") {
      event.preventDefault(); acceptModel(form);
    } else if (form && key === "s") {
      event.preventDefault(); form.requestSubmit();
    } else if (key === "g") {
      toggleGradcam();
    } else if (key === "n" || key === "ArrowRight") {
      follow("next");
    } else if (key === "p" || key === "ArrowLeft") {
      follow("prev");
    }
  });
});
