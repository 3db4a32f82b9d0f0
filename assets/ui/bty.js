// bty-web UI behaviour that needs a script. Every page works without it (reading, and every form
// as a plain POST); this adds the live-connection indicator, live progress bars, copy buttons and
// confirmations.
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

  // Live progress: one `progress` frame holds the newest bar of each machine that reported.
  // Each replaces the element with its id, when this page shows that machine.
  document.addEventListener('htmx:sseBeforeMessage', function (event) {
    if (!(event.target instanceof Element) || event.target.id !== 'live-progress') return;
    event.preventDefault();
    var template = document.createElement('template');
    template.innerHTML = event.detail.data;
    Array.prototype.forEach.call(template.content.children, function (bar) {
      var current = bar.id ? document.getElementById(bar.id) : null;
      if (current) current.replaceWith(bar);
    });
  });

  // Click-to-copy for any element carrying data-copy. The Clipboard API exists only on HTTPS
  // and localhost; bty-web usually serves plain HTTP on a LAN, so fall back to a selection.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    return new Promise(function (resolve, reject) {
      var area = document.createElement('textarea');
      area.value = text;
      area.setAttribute('readonly', '');
      area.style.position = 'fixed';
      area.style.opacity = '0';
      document.body.appendChild(area);
      area.select();
      var ok;
      try {
        ok = document.execCommand('copy');
      } catch {
        ok = false;
      }
      document.body.removeChild(area);
      if (ok) resolve();
      else reject(new Error('copy refused'));
    });
  }

  document.addEventListener('click', function (event) {
    var target = event.target instanceof Element ? event.target.closest('[data-copy]') : null;
    if (!target) return;
    event.preventDefault();
    copyText(target.getAttribute('data-copy') || '').then(
      function () {
        target.classList.add('copied');
        setTimeout(function () {
          target.classList.remove('copied');
        }, 1200);
      },
      function () {
        window.prompt('Copy this:', target.getAttribute('data-copy') || '');
      },
    );
  });

  // Forms and buttons that destroy something ask first (data-confirm="question"). A yes fills
  // the form's `confirm` field, so the server skips its own confirmation page (the one a
  // browser without JavaScript gets).
  document.addEventListener('submit', function (event) {
    var form = event.target;
    var submitter = event.submitter;
    var question =
      (submitter && submitter.getAttribute('data-confirm')) ||
      (form && form.getAttribute && form.getAttribute('data-confirm'));
    if (!question) return;
    if (!window.confirm(question)) {
      event.preventDefault();
      return;
    }
    if (form.elements && form.elements.confirm) form.elements.confirm.value = '1';
  });
})();
