// bty-web UI behaviour that needs a script. Every page works without it (reading, and every form
// as a plain POST); this adds the live-connection indicator, copy buttons and confirmations.
(function () {
  'use strict';

  function setLive(state) {
    var badge = document.getElementById('live-indicator');
    if (!badge) return;
    var styles = {
      live: 'text-bg-success',
      offline: 'text-bg-danger',
      connecting: 'text-bg-secondary',
    };
    badge.className = 'badge me-3 ' + styles[state];
    badge.textContent = state === 'connecting' ? 'connecting…' : state;
    badge.dataset.state = state;
  }

  document.addEventListener('htmx:sseOpen', function () {
    setLive('live');
  });
  document.addEventListener('htmx:sseError', function () {
    setLive('offline');
  });
  document.addEventListener('htmx:sseClose', function () {
    setLive('offline');
  });

  // Click-to-copy for any element carrying data-copy.
  document.addEventListener('click', function (event) {
    var target = event.target instanceof Element ? event.target.closest('[data-copy]') : null;
    if (!target || !navigator.clipboard) return;
    event.preventDefault();
    navigator.clipboard.writeText(target.getAttribute('data-copy') || '').then(function () {
      target.classList.add('copied');
      setTimeout(function () {
        target.classList.remove('copied');
      }, 1200);
    });
  });

  // Forms and buttons that destroy something ask first (data-confirm="question").
  document.addEventListener('submit', function (event) {
    var form = event.target;
    var submitter = event.submitter;
    var question =
      (submitter && submitter.getAttribute('data-confirm')) ||
      (form && form.getAttribute && form.getAttribute('data-confirm'));
    if (question && !window.confirm(question)) event.preventDefault();
  });
})();
