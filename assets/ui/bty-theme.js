// bty-web UI: follow the browser's colour scheme (Bootstrap's data-bs-theme), before first paint
// and whenever the system setting changes.
(function () {
  var query = window.matchMedia('(prefers-color-scheme: dark)');
  function apply() {
    document.documentElement.setAttribute('data-bs-theme', query.matches ? 'dark' : 'light');
  }
  apply();
  if (query.addEventListener) query.addEventListener('change', apply);
})();
