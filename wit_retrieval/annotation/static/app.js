// Keyboard shortcuts for the rater app: keys 1..n press the n-th answer button.
document.addEventListener("keydown", function (event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  var target = event.target;
  if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) return;
  var button = document.querySelector('#rate-form button[data-key="' + event.key + '"]');
  if (!button) return;
  event.preventDefault();
  button.click();
});
