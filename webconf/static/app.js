// Keyquorum WebConf: the live view and the simulator panel. Served by the binary itself (the
// appliance is offline) and allowed by the CSP as the only script; no inline script anywhere.
(function () {
	'use strict';

	var meta = document.querySelector('meta[name="csrf-token"]');
	var csrf = meta ? meta.getAttribute('content') : '';

	// --- problems reported by actions sent from the page ---
	var toast = document.createElement('div');
	toast.id = 'toast';
	toast.setAttribute('role', 'alert');
	toast.setAttribute('data-testid', 'toast');
	toast.hidden = true;
	document.body.appendChild(toast);
	function showProblem(p) {
		toast.textContent = '';
		var t = document.createElement('strong');
		t.textContent = p.title || 'Action failed';
		var w = document.createElement('p');
		w.textContent = p.what || '';
		var d = document.createElement('p');
		d.textContent = p.todo ? 'What to do: ' + p.todo : '';
		var close = document.createElement('button');
		close.type = 'button';
		close.textContent = 'Dismiss';
		close.addEventListener('click', function () { toast.hidden = true; });
		toast.append(t, w, d, close);
		toast.hidden = false;
	}

	// Forms marked data-fetch (simulator keys, retry, cancel) are sent without leaving the page;
	// the event stream brings the result. They are sent one after the other, never side by
	// side: the digits of a PIN typed on the virtual pad must arrive in the order typed.
	var queue = Promise.resolve();
	document.addEventListener('submit', function (e) {
		var form = e.target;
		if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-fetch')) {
			return;
		}
		e.preventDefault();
		var data = new URLSearchParams(new FormData(form, e.submitter || null));
		queue = queue.then(function () { return send(form.action, data); });
	});
	function send(action, data) {
		return fetch(action, {
			method: 'POST',
			body: data,
			credentials: 'same-origin',
			headers: { 'X-Keyquorum-Fetch': '1', 'X-CSRF-Token': csrf }
		}).then(function (resp) {
			if (resp.ok) {
				return;
			}
			return resp.json().then(showProblem, function () {
				showProblem({ title: 'Action failed (' + resp.status + ')', todo: 'Reload the page and try again.' });
			});
		}, function () {
			showProblem({ title: 'WebConf cannot be reached', todo: 'Check that the service runs, then reload the page.' });
		});
	}

	// Typing a custom quorum chooses the custom quorum.
	document.querySelectorAll('input[name="k"], input[name="n"]').forEach(function (el) {
		el.addEventListener('input', function () {
			var custom = document.querySelector('input[name="quorum"][value="custom"]');
			if (custom) {
				custom.checked = true;
			}
		});
	});

	document.addEventListener('click', function (e) {
		if (e.target instanceof Element && e.target.hasAttribute('data-print')) {
			window.print();
		}
	});

	// --- countdowns: deadlines come with the server's clock, so skew does not matter ---
	var liveDeadline = null, liveSkew = 0, padDeadline = null, padSkew = 0;
	function remaining(deadline, skew) {
		if (deadline === null) {
			return '';
		}
		var ms = deadline - (Date.now() + skew);
		if (ms <= 0) {
			return 'timed out';
		}
		var s = Math.ceil(ms / 1000);
		return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0') + ' left';
	}
	function parseDeadline(d) {
		return d ? Date.parse(d) : null;
	}
	function tick() {
		document.querySelectorAll('[data-live-countdown]').forEach(function (el) {
			el.textContent = remaining(liveDeadline, liveSkew);
		});
		document.querySelectorAll('[data-sim-countdown]').forEach(function (el) {
			el.textContent = remaining(padDeadline, padSkew);
		});
	}
	var initial = document.getElementById('live-initial');
	if (initial) {
		liveDeadline = parseDeadline(initial.dataset.deadline);
		if (initial.dataset.now) {
			liveSkew = Date.parse(initial.dataset.now) - Date.now();
		}
	}
	var simCountdown = document.querySelector('[data-sim-countdown]');
	if (simCountdown) {
		padDeadline = parseDeadline(simCountdown.getAttribute('data-sim-countdown'));
	}
	tick();
	setInterval(tick, 1000);

	// --- the live view ---
	var shows = {
		error: function (v) { return !!v.error; },
		outcome: function (v) { return !!v.outcome; },
		stalled: function (v) { return v.stalled; },
		confirming: function (v) { return v.confirming; },
		active: function (v) { return v.active; }
	};
	function applyLive(v) {
		document.querySelectorAll('[data-live]').forEach(function (el) {
			var k = el.getAttribute('data-live');
			var val = v[k];
			el.textContent = val === undefined || val === null ? '' : String(val);
		});
		document.querySelectorAll('[data-live-show]').forEach(function (el) {
			var f = shows[el.getAttribute('data-live-show')];
			if (f) {
				el.hidden = !f(v);
			}
		});
		document.querySelectorAll('[data-live-href]').forEach(function (el) {
			var url = v[el.getAttribute('data-live-href')];
			if (url) {
				el.setAttribute('href', url);
			}
			el.hidden = !url;
		});
		var live = document.getElementById('live');
		if (live) {
			live.dataset.seq = String(v.seq);
			live.dataset.active = String(v.active);
			live.dataset.stalled = String(v.stalled);
		}
		var banner = document.getElementById('live-banner');
		if (banner) {
			banner.hidden = !v.active || document.body.dataset.page === 'ceremony';
		}
		liveDeadline = parseDeadline(v.deadline);
		liveSkew = v.now ? Date.parse(v.now) - Date.now() : 0;
		tick();
	}

	// --- the simulator panel ---
	var rackKey = null;
	function applyPad(v) {
		document.querySelectorAll('[data-sim]').forEach(function (el) {
			var val = v[el.getAttribute('data-sim')];
			el.textContent = val === undefined || val === null ? '' : String(val);
		});
		padDeadline = parseDeadline(v.deadline);
		tick();
		var key = JSON.stringify([v.inserted, v.plugged, v.cards]);
		if (rackKey !== null && key !== rackKey) {
			refreshRack();
		}
		rackKey = key;
	}
	function refreshRack() {
		var rack = document.getElementById('sim-rack');
		if (!rack) {
			return;
		}
		fetch('/sim/rack', { credentials: 'same-origin', headers: { 'X-Keyquorum-Fetch': '1' } })
			.then(function (resp) { return resp.ok ? resp.text() : null; })
			.then(function (html) {
				if (html !== null) {
					rack.innerHTML = html; // server-rendered, escaped by templ; no script in it
				}
			});
	}

	// --- the event stream ---
	var conn = document.querySelectorAll('[data-live-connection]');
	function setConn(text, ok) {
		conn.forEach(function (el) {
			el.textContent = text;
			el.dataset.connected = ok ? 'true' : 'false';
		});
	}
	if (window.EventSource) {
		var es = new EventSource('/events');
		es.addEventListener('hello', function () { setConn('live: this page updates by itself', true); });
		es.addEventListener('ceremony', function (m) { applyLive(JSON.parse(m.data)); });
		es.addEventListener('pad', function (m) { applyPad(JSON.parse(m.data)); });
		es.addEventListener('error', function () { setConn('live stream interrupted: reconnecting…', false); });
		window.addEventListener('pagehide', function () { es.close(); });
	} else {
		setConn('this browser cannot show live updates: reload the page to see progress', false);
	}
})();
