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
		if (form.hasAttribute('data-step-up')) {
			// An answer whose OK destroys data (the form says so) needs the security key first:
			// WebConf says whether this one does, as for every dangerous form.
			var params = new URLSearchParams(data);
			params.delete('csrf');
			params.delete('webauthn');
			params.set('_path', new URL(form.action, window.location.href).pathname);
			queue = queue.then(function () {
				return confirmWithKey(params).then(function (token) {
					if (token) {
						data.set('webauthn', token);
					}
					return send(form.action, data);
				}, function (err) { showProblem(keyError(err)); });
			});
			return;
		}
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

	// --- security keys (WebAuthn) ---
	// Every POST form that is not sent in the background (data-fetch) asks WebConf first whether
	// what it does needs a fresh confirmation with a security key; if so the browser asks for
	// the key, and the form goes out with the token that confirmation earned.
	function b64uToBuf(s) {
		s = s.replace(/-/g, '+').replace(/_/g, '/');
		while (s.length % 4) {
			s += '=';
		}
		var bin = atob(s), out = new Uint8Array(bin.length);
		for (var i = 0; i < bin.length; i++) {
			out[i] = bin.charCodeAt(i);
		}
		return out.buffer;
	}
	function bufToB64u(buf) {
		var b = new Uint8Array(buf), s = '';
		for (var i = 0; i < b.length; i++) {
			s += String.fromCharCode(b[i]);
		}
		return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
	}
	function postTo(url, body, extra) {
		var headers = { 'X-Keyquorum-Fetch': '1', 'X-CSRF-Token': csrf };
		if (typeof body === 'string') {
			headers['Content-Type'] = 'application/json';
		}
		Object.assign(headers, extra || {});
		return fetch(url, { method: 'POST', body: body, credentials: 'same-origin', headers: headers }).then(function (resp) {
			return resp.json().catch(function () { return {}; }).then(function (j) {
				if (!resp.ok) {
					throw { title: j.title || 'Action failed (' + resp.status + ')', what: j.what, todo: j.todo || 'Reload the page and try again.' };
				}
				return j;
			});
		}, function () {
			throw { title: 'WebConf cannot be reached', todo: 'Check that the service runs, then reload the page.' };
		});
	}
	function keyUnavailable() {
		return { title: 'This browser offers no security key here',
			what: 'Security keys (WebAuthn) work only on pages opened over HTTPS at the appliance\'s host name.',
			todo: 'Open WebConf at the address your account page names, then try again.' };
	}
	function keyError(e) {
		if (e && e.title) {
			return e;
		}
		return { title: 'The security key was not used', what: (e && e.message) || String(e),
			todo: 'Try again: touch your security key and enter its PIN (or use its fingerprint) when the browser asks.' };
	}
	// confirmWithKey asks for an assertion when the server says the action needs one; it
	// resolves to the token ('' when none is needed).
	function confirmWithKey(params) {
		return postTo('/webauthn/assert/begin', params).then(function (j) {
			if (!j.needed) {
				return '';
			}
			if (!window.PublicKeyCredential || !navigator.credentials) {
				throw keyUnavailable();
			}
			var o = j.publicKey;
			o.challenge = b64uToBuf(o.challenge);
			(o.allowCredentials || []).forEach(function (c) { c.id = b64uToBuf(c.id); });
			return navigator.credentials.get({ publicKey: o }).then(function (cred) {
				var r = cred.response;
				return postTo('/webauthn/assert/finish?session=' + encodeURIComponent(j.session), JSON.stringify({
					id: cred.id, rawId: bufToB64u(cred.rawId), type: cred.type,
					response: {
						clientDataJSON: bufToB64u(r.clientDataJSON),
						authenticatorData: bufToB64u(r.authenticatorData),
						signature: bufToB64u(r.signature),
						userHandle: r.userHandle ? bufToB64u(r.userHandle) : null
					}
				}));
			}).then(function (f) { return f.token; });
		});
	}
	// formFields is what the server needs to tell which action a security key confirms: never a
	// password field (e.g. a node file's password), which goes only with the form itself.
	function formFields(form, submitter) {
		var params = new URLSearchParams();
		var secret = {};
		Array.prototype.forEach.call(form.elements, function (el) {
			if (el.name && el.type === 'password') {
				secret[el.name] = true;
			}
		});
		new FormData(form, submitter || null).forEach(function (v, k) {
			if (typeof v === 'string' && k !== 'csrf' && k !== 'webauthn' && !secret[k]) {
				params.append(k, v);
			}
		});
		return params;
	}
	function registerKey(form) {
		var params = new URLSearchParams();
		params.set('_path', '/webauthn/register/begin');
		return confirmWithKey(params).then(function (token) {
			var extra = token ? { 'X-Keyquorum-Approval': token } : {};
			return postTo('/webauthn/register/begin', formFields(form), extra);
		}).then(function (j) {
			if (!window.PublicKeyCredential || !navigator.credentials) {
				throw keyUnavailable();
			}
			var o = j.publicKey;
			o.challenge = b64uToBuf(o.challenge);
			o.user.id = b64uToBuf(o.user.id);
			(o.excludeCredentials || []).forEach(function (c) { c.id = b64uToBuf(c.id); });
			return navigator.credentials.create({ publicKey: o }).then(function (cred) {
				var r = cred.response;
				return postTo('/webauthn/register/finish?session=' + encodeURIComponent(j.session), JSON.stringify({
					id: cred.id, rawId: bufToB64u(cred.rawId), type: cred.type,
					response: {
						clientDataJSON: bufToB64u(r.clientDataJSON),
						attestationObject: bufToB64u(r.attestationObject),
						transports: r.getTransports ? r.getTransports() : []
					}
				}));
			});
		}).then(function () { window.location.reload(); });
	}
	function approveCLI(form) {
		var params = formFields(form);
		params.set('_purpose', 'cli');
		return confirmWithKey(params).then(function (token) {
			var out = document.querySelector('[data-testid="approval-token"]');
			out.textContent = token;
			out.parentElement.hidden = false;
		});
	}
	document.addEventListener('submit', function (e) {
		var form = e.target;
		if (!(form instanceof HTMLFormElement) || form.hasAttribute('data-fetch')) {
			return;
		}
		if (form.hasAttribute('data-webauthn-register')) {
			e.preventDefault();
			registerKey(form).catch(function (err) { showProblem(keyError(err)); });
			return;
		}
		if (form.hasAttribute('data-webauthn-approve')) {
			e.preventDefault();
			approveCLI(form).catch(function (err) { showProblem(keyError(err)); });
			return;
		}
		if (form.method.toLowerCase() !== 'post') {
			return;
		}
		if (form.dataset.confirmed === '1') { // the second pass, with the token
			delete form.dataset.confirmed;
			return;
		}
		e.preventDefault();
		var submitter = e.submitter || null;
		var params = formFields(form, submitter);
		// The button's own target counts (the restore form's Preview button posts to
		// /hsm/restore/preview, which changes nothing and needs no security key).
		var target = submitter && submitter.hasAttribute('formaction') ? submitter.formAction : form.action;
		var action = new URL(target, window.location.href);
		params.set('_path', action.pathname);
		confirmWithKey(params).then(function (token) {
			if (token) {
				// In the body, never the URL; first in the form, so that an upload's token
				// comes before its file (the server reads the leading fields only).
				var input = form.querySelector('input[name="webauthn"]');
				if (!input) {
					input = document.createElement('input');
					input.type = 'hidden';
					input.name = 'webauthn';
					form.insertBefore(input, form.firstChild);
				}
				input.value = token;
			}
			form.dataset.confirmed = '1';
			if (submitter) {
				form.requestSubmit(submitter);
			} else {
				form.requestSubmit();
			}
		}, function (err) { showProblem(keyError(err)); });
	});

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
		question: function (v) { return !!v.question_text; },
		active: function (v) { return v.active; }
	};
	function applyLive(v) {
		document.querySelectorAll('[data-live]').forEach(function (el) {
			var k = el.getAttribute('data-live');
			var val = v[k];
			el.textContent = val === undefined || val === null ? '' : String(val);
		});
		document.querySelectorAll('[data-live-value]').forEach(function (el) {
			var val = v[el.getAttribute('data-live-value')];
			el.value = val === undefined || val === null ? '' : String(val);
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
