// Tollgate's page: sign in, ask, follow the status live, read the answer,
// see your limits and (for administrators) today's usage. Plain JavaScript,
// no framework, no build step, nothing loaded from elsewhere.
//
// EventSource cannot send an Authorization header, so the event stream is
// read with fetch() and parsed here (text/event-stream). The token lives in
// sessionStorage: it is gone when the tab closes.

const TOKEN_KEY = 'tollgate.token';
const $ = (sel) => document.querySelector(sel);

// ---------------------------------------------------------------- API ----

// ApiError is a refused request: the problem details (RFC 9457) the API
// sent, the HTTP status, and Retry-After as a Date when there was one.
class ApiError extends Error {
  constructor(status, problem, retryAt, requestId) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.retryAt = retryAt;
    this.requestId = requestId;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

// api calls the API with the bearer token and returns the decoded JSON, or
// throws ApiError (or a TypeError when the server cannot be reached).
async function api(path, { method = 'GET', body, headers = {}, signal, auth = true } = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (auth) h.Authorization = `Bearer ${token()}`;
  const init = { method, headers: h, signal, cache: 'no-store' };
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) throw await apiError(res);
  return res.json();
}

async function apiError(res) {
  let problem = {};
  try {
    const type = res.headers.get('Content-Type') || '';
    if (type.includes('json')) problem = await res.json();
    else problem = { detail: (await res.text()).trim().slice(0, 300) };
  } catch {
    // a body that cannot be read still leaves the status
  }
  if (!problem || typeof problem !== 'object') problem = {};
  return new ApiError(res.status, problem, retryAt(res.headers.get('Retry-After')), res.headers.get('X-Request-Id'));
}

// retryAt reads Retry-After: delay-seconds or an HTTP date.
function retryAt(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return new Date(Date.now() + Number(value) * 1000);
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

// idempotencyKey makes a retried submit return the same query, not a second one.
function idempotencyKey() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// sseEvents yields the events of a text/event-stream response body.
async function* sseEvents(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let ev = { event: '', data: [], id: '' };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line === '') {
          if (ev.data.length) yield { event: ev.event || 'message', data: ev.data.join('\n'), id: ev.id };
          ev = { event: '', data: [], id: ev.id };
          continue;
        }
        if (line.startsWith(':')) continue; // comment: heartbeat
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'event') ev.event = val;
        else if (field === 'data') ev.data.push(val);
        else if (field === 'id') ev.id = val;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

const isFinal = (status) => status === 'succeeded' || status === 'failed';

// follow streams a query's status events until it is finished, calling
// onRecord for each. A dropped stream is resumed with Last-Event-ID; after
// repeated failures it falls back to long polling (?wait=).
async function follow(id, signal, onRecord) {
  const path = `/v1/queries/${encodeURIComponent(id)}`;
  let lastEventId = '';
  let failures = 0;
  while (!signal.aborted) {
    try {
      const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${token()}` };
      if (lastEventId) headers['Last-Event-ID'] = lastEventId;
      const res = await fetch(`${path}/events`, { headers, signal, cache: 'no-store' });
      if (!res.ok) throw await apiError(res);
      for await (const ev of sseEvents(res)) {
        if (ev.id) lastEventId = ev.id;
        if (ev.event !== 'status') continue;
        const rec = JSON.parse(ev.data);
        failures = 0;
        onRecord(rec);
        if (isFinal(rec.status)) return rec;
      }
      failures++; // the stream ended before the query finished
    } catch (err) {
      if (signal.aborted) return null;
      if (err instanceof ApiError && err.status < 500 && err.status !== 429) throw err;
      failures++;
    }
    if (failures > 3) return poll(path, signal, onRecord);
    await sleep(Math.min(500 * 2 ** failures, 8000), signal);
  }
  return null;
}

async function poll(path, signal, onRecord) {
  while (!signal.aborted) {
    const rec = await api(`${path}?wait=30`, { signal });
    onRecord(rec);
    if (isFinal(rec.status)) return rec;
  }
  return null;
}

// ------------------------------------------------------------ display ----

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function usd(v) {
  if (typeof v !== 'number' || Number.isNaN(v)) return '–';
  if (v === 0) return '$0.00';
  if (Math.abs(v) < 0.01) return `$${v.toFixed(6)}`;
  return `$${v.toFixed(4).replace(/(\.\d\d\d*?)0+$/, '$1')}`; // $1.00, $0.125, $0.9999
}

const num = (v) => (typeof v === 'number' ? v.toLocaleString('en-US') : '–');

function clock(iso) {
  const d = iso instanceof Date ? iso : new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function timeEl(iso) {
  const d = iso instanceof Date ? iso : new Date(iso);
  return el('time', { datetime: d.toISOString(), text: clock(d) });
}

function duration(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const show = (node, on = true) => { node.hidden = !on; };

// Problems ----------------------------------------------------------------

let retryTimer = null;

function clearProblem() {
  $('#problem').replaceChildren();
}

// showProblem puts an error in the alert region: the problem's title and
// detail, per-field messages, and when to retry.
function showProblem(err, doing) {
  const box = $('#problem');
  const parts = [];
  if (err instanceof ApiError) {
    const p = err.problem;
    parts.push(el('p', { class: 'problem-title', text: `${doing}: ${p.title || 'HTTP error'} (${err.status})` }));
    if (p.detail) parts.push(el('p', { text: p.detail }));
    if (p.errors && typeof p.errors === 'object') {
      const ul = el('ul');
      for (const [field, msg] of Object.entries(p.errors)) {
        ul.append(el('li', {}, el('code', { text: field }), `: ${msg}`));
      }
      parts.push(ul);
    }
    if (err.retryAt) {
      parts.push(el('p', {}, 'You can try again at ', timeEl(err.retryAt),
        ` (in ${duration(err.retryAt - Date.now())}).`));
    }
    if (err.requestId) parts.push(el('p', { class: 'meta', text: `Request id ${err.requestId}` }));
  } else {
    parts.push(el('p', { class: 'problem-title', text: `${doing}: the server could not be reached` }));
    parts.push(el('p', { text: String(err && err.message ? err.message : err) }));
  }
  const dismiss = el('button', { type: 'button', class: 'secondary', text: 'Dismiss' });
  dismiss.addEventListener('click', clearProblem);
  parts.push(dismiss);
  box.replaceChildren(...parts);
  if (err instanceof ApiError && err.retryAt && err.status !== 401) holdAskUntil(err.retryAt);
}

// holdAskUntil disables the Ask button with a countdown until Retry-After.
function holdAskUntil(when) {
  const button = $('#ask-button');
  clearInterval(retryTimer);
  const tick = () => {
    const left = when - Date.now();
    if (left <= 0) {
      clearInterval(retryTimer);
      button.disabled = false;
      button.textContent = 'Ask';
      return;
    }
    button.disabled = true;
    button.textContent = `Ask (wait ${duration(left)})`;
  };
  tick();
  retryTimer = setInterval(tick, 1000);
}

// Answer ------------------------------------------------------------------

const statusText = {
  queued: 'queued — waiting for a worker',
  running: 'running — reading the sources and writing the answer',
  succeeded: 'succeeded — the answer is below',
  failed: 'failed',
};

function startResult(question) {
  show($('#result'));
  $('#asked').textContent = `You asked: “${question}”`;
  $('#status-history').replaceChildren();
  $('#status').textContent = 'sending…';
  $('#status').dataset.status = '';
  for (const id of ['#answer', '#sources-block', '#usage']) show($(id), false);
  $('#answer').replaceChildren();
  $('#sources').replaceChildren();
  $('#query-meta').textContent = '';
}

// renderRecord shows a query record: its status (announced through the
// role=status region), the status history, and when finished the answer,
// its sources and what it cost.
function renderRecord(rec) {
  const status = $('#status');
  if (status.dataset.status !== rec.status) {
    let text = statusText[rec.status] || rec.status;
    if (rec.status === 'failed' && rec.error) text = `failed — ${rec.error.message} (${rec.error.code})`;
    status.textContent = text;
    status.dataset.status = rec.status;
    const at = { queued: rec.created_at, running: rec.started_at, succeeded: rec.completed_at, failed: rec.completed_at }[rec.status];
    $('#status-history').append(el('li', { 'data-status': rec.status }, rec.status, at ? timeEl(at) : null));
  }
  const meta = [`Query ${rec.id}`];
  if (rec.completed_at && rec.created_at) {
    meta.push(`answered in ${((new Date(rec.completed_at) - new Date(rec.created_at)) / 1000).toFixed(1)} s`);
  }
  $('#query-meta').textContent = meta.join(' · ');
  if (rec.status !== 'succeeded') return;

  const sources = rec.sources || [];
  renderAnswer($('#answer'), rec.answer || '(empty answer)', sources.length);
  show($('#answer'));
  $('#sources').replaceChildren(...sources.map((s, i) => el('li', { id: `source-${i + 1}` },
    el('span', { class: 'src-title', text: s.title || s.source || 'Untitled' }), ' ',
    el('span', { class: 'src-file', text: s.source ? `(${s.source})` : '' }), ' ',
    el('span', { class: 'src-score', text: typeof s.score === 'number' ? `score ${s.score.toFixed(3)}` : '' }),
    el('blockquote', {}, ...inline(s.snippet || '')))));
  show($('#sources-block'), sources.length > 0);
  if (rec.usage) {
    const u = rec.usage;
    const model = u.priced_as && u.priced_as !== u.model ? `${u.model} (priced as ${u.priced_as})` : u.model;
    const parts = [`Model ${model}`, `${num(u.prompt_tokens)} prompt + ${num(u.completion_tokens)} completion tokens`, `cost ${usd(u.cost_usd)}`];
    if (u.cached) parts.push('answered from cache');
    if (u.simulated) parts.push('offline generator (simulated usage)');
    $('#usage').textContent = parts.join(' · ');
    show($('#usage'));
  }
}

// renderAnswer writes the answer as paragraphs, with **bold**, `code` and
// [n] citations linked to the sources; everything else stays plain text.
function renderAnswer(box, text, nSources) {
  const paras = text.split(/\n\s*\n/).map((para) => {
    const p = el('p');
    para.split('\n').forEach((line, i) => {
      if (i > 0) p.append(el('br'));
      p.append(...inline(line, nSources));
    });
    return p;
  });
  box.replaceChildren(...paras);
}

// inline turns the little Markdown that answers and passages use into
// nodes: **bold**, `code`, and [n] citations when n names a source.
function inline(text, nSources = 0) {
  const out = [];
  for (const piece of text.split(/(\*\*[^*\n]+\*\*|`[^`\n]+`|\[\d+\])/)) {
    if (!piece) continue;
    const bold = piece.match(/^\*\*([^*\n]+)\*\*$/);
    const code = piece.match(/^`([^`\n]+)`$/);
    const cite = piece.match(/^\[(\d+)\]$/);
    if (bold) out.push(el('strong', { text: bold[1] }));
    else if (code) out.push(el('code', { text: code[1] }));
    else if (cite && Number(cite[1]) >= 1 && Number(cite[1]) <= nSources) {
      out.push(el('a', { href: `#source-${cite[1]}`, 'aria-label': `source ${cite[1]}`, text: `[${cite[1]}]` }));
    } else out.push(piece);
  }
  return out;
}

// Limits and usage ----------------------------------------------------------

function renderMe(me) {
  $('#who').textContent = me.user;
  const cap = Math.round(me.capacity);
  $('#me-tokens').textContent = `${num(me.tokens_left)} of ${num(cap)}`;
  const tm = $('#me-tokens-meter');
  tm.max = cap || 1;
  tm.value = me.tokens_left;
  tm.low = Math.max(1, Math.ceil(cap * 0.2));
  tm.optimum = cap;
  const refill = me.refill_per_minute >= 1 ? `${+me.refill_per_minute.toFixed(2)} a minute` : `one every ${duration(60000 / me.refill_per_minute)}`;
  const next = me.next_token_at ? ` The next one comes at ${clock(me.next_token_at)}.` : '';
  $('#me-refill').textContent = `(refills ${refill}.${next})`;

  const dm = $('#me-daily-meter');
  if (me.daily_limit > 0) {
    $('#me-daily').textContent = `${num(me.daily_used)} of ${num(me.daily_limit)} used`;
    dm.max = me.daily_limit;
    dm.value = me.daily_used;
    dm.high = Math.floor(me.daily_limit * 0.8);
    dm.optimum = 0;
    show(dm);
  } else {
    $('#me-daily').textContent = `${num(me.daily_used)} (no daily limit)`;
    show(dm, false);
  }
  $('#me-reset').textContent = `(resets at ${clock(me.day_resets_at)}, midnight UTC)`;
  $('#me-spent').textContent = usd(me.spent_today_usd);
  show($('#me'));
}

function tableRows(tbody, rows, cols) {
  if (rows.length === 0) {
    tbody.replaceChildren(el('tr', {}, el('td', { class: 'empty', colspan: String(cols), text: 'Nothing yet today.' })));
    return;
  }
  tbody.replaceChildren(...rows);
}

function renderUsage(u) {
  $('#admin-day').textContent = `Day ${u.day} (UTC); prices as of ${u.prices_as_of}.`;
  $('#admin-budget').textContent = `${usd(u.budget_usd)} a day`;
  const pct = Math.max(0, u.percent_used || 0);
  $('#admin-meter').value = Math.min(pct, 100);
  $('#admin-percent').textContent = `${pct.toFixed(pct < 1 ? 2 : 1)}% used${u.exhausted ? ' — exhausted: new questions are refused until midnight UTC' : ''}`;
  $('#admin-money').textContent = `${usd(u.spent_usd)} · ${usd(u.reserved_usd)} · ${usd(u.remaining_usd)}`;
  $('#admin-requests').textContent = num(u.requests) + (u.unpriced_events ? ` (${u.unpriced_events} with an unknown model price)` : '');
  const t = u.tokens || {};
  $('#admin-tokens').textContent = `${num(t.prompt)} prompt (${num(t.cached_prompt)} cached) · ${num(t.completion)} completion`;

  tableRows($('#admin-users tbody'), (u.by_user || []).map((r) => el('tr', {},
    el('td', { text: r.user }), el('td', { class: 'num', text: num(r.requests) }), el('td', { class: 'num', text: usd(r.spent_usd) }))), 3);
  tableRows($('#admin-models tbody'), (u.by_model || []).map((r) => el('tr', {},
    el('td', { text: r.model }), el('td', { class: 'num', text: num(r.requests) }),
    el('td', { class: 'num', text: num(r.tokens?.prompt) }), el('td', { class: 'num', text: num(r.tokens?.completion) }),
    el('td', { class: 'num', text: usd(r.spent_usd) }))), 5);

  const alerts = u.alerts || [];
  $('#admin-alerts').replaceChildren(...(alerts.length ? alerts.map((a) => el('li', {
    text: `${Math.round(a.threshold * 100)}% of the budget: ${a.status}` +
      (a.sent_at ? `, sent at ${clock(a.sent_at)}` : '') +
      (a.attempts ? ` (${a.attempts} attempt${a.attempts === 1 ? '' : 's'})` : '') +
      (a.last_error ? ` — last error: ${a.last_error}` : ''),
  })) : [el('li', { text: 'No alerts today.' })]));
}

// -------------------------------------------------------------- flow ----

let streamCtl = null;

async function refreshMe(doing = 'Reading your limits') {
  try {
    renderMe(await api('/v1/me'));
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut();
    showProblem(err, doing);
    return false;
  }
}

async function refreshUsage() {
  try {
    renderUsage(await api('/v1/admin/usage'));
    show($('#admin'));
    show($('#who-admin'));
  } catch (err) {
    show($('#admin'), false);
    show($('#who-admin'), false);
    if (err instanceof ApiError && err.status === 403) return; // not an administrator
    showProblem(err, 'Reading today\'s usage');
  }
}

async function signIn(tok) {
  sessionStorage.setItem(TOKEN_KEY, tok);
  clearProblem();
  if (!(await refreshMe('Signing in'))) return false;
  show($('#signin'), false);
  show($('#session'));
  show($('#ask'));
  await refreshUsage();
  return true;
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  streamCtl?.abort();
  for (const id of ['#session', '#ask', '#result', '#me', '#admin']) show($(id), false);
  show($('#signin'));
  $('#token').value = '';
  $('#question').value = '';
}

async function ask(question, k) {
  streamCtl?.abort();
  const ctl = new AbortController();
  streamCtl = ctl;
  clearProblem();
  startResult(question);
  let accepted;
  try {
    accepted = await api('/v1/queries', { method: 'POST', body: { question, k }, headers: { 'Idempotency-Key': idempotencyKey() } });
  } catch (err) {
    show($('#result'), false);
    if (err instanceof ApiError && err.status === 401) signOut();
    else refreshMe();
    showProblem(err, 'Asking');
    return;
  }
  renderRecord({ ...accepted, question });
  refreshMe();
  try {
    const rec = await follow(accepted.id, ctl.signal, renderRecord);
    if (rec) {
      refreshMe();
      if (!$('#admin').hidden) refreshUsage();
    }
  } catch (err) {
    if (!ctl.signal.aborted) showProblem(err, 'Following the answer');
  }
}

async function devMode() {
  try {
    const res = await fetch('/dev/token', { cache: 'no-store' });
    return res.status === 400; // the dev issuer wants ?user=; elsewhere there is no such route
  } catch {
    return false;
  }
}

function wire() {
  $('#token-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const tok = $('#token').value.trim().replace(/^Bearer\s+/i, '');
    if (!tok) return;
    if (await signIn(tok)) $('#question').focus();
    else sessionStorage.removeItem(TOKEN_KEY);
  });

  $('#dev-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const user = $('#dev-user').value.trim();
    const q = new URLSearchParams({ user });
    if ($('#dev-admin').checked) q.set('admin', 'true');
    try {
      const res = await api(`/dev/token?${q}`, { auth: false });
      if (await signIn(res.access_token)) $('#question').focus();
    } catch (err) {
      showProblem(err, 'Getting a dev token');
    }
  });

  $('#signout').addEventListener('click', () => {
    signOut();
    clearProblem();
    $('#token').focus();
  });

  $('#ask-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if ($('#ask-button').disabled) return;
    const question = $('#question').value.trim();
    const k = Number($('#k').value) || 5;
    if (!question) {
      $('#question').focus();
      return;
    }
    ask(question, k);
  });
  $('#question').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      $('#ask-form').requestSubmit();
    }
  });

  $('#me-refresh').addEventListener('click', () => refreshMe());
  $('#admin-refresh').addEventListener('click', () => refreshUsage());
}

async function main() {
  wire();
  if (await devMode()) show($('#dev-form'));
  if (token() && !(await signIn(token()))) sessionStorage.removeItem(TOKEN_KEY);
  document.body.dataset.ready = 'true';
}

main();
