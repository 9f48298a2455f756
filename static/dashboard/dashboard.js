// Small helpers: a form that sends (class "once") is sent once, its button
// disabled while the request runs; "Copy" buttons copy a circular's text.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.classList.contains("once")) return;
  if (form.dataset.sent) { event.preventDefault(); return; }
  form.dataset.sent = "1";
  form.querySelectorAll("button").forEach(function (b) { b.disabled = true; b.textContent = "Sending…"; });
});
document.addEventListener("click", function (event) {
  var button = event.target.closest("button.copy");
  if (!button) return;
  var text = document.getElementById(button.dataset.copy).textContent;
  navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; });
});
