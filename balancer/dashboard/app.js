// PLB dashboard: plain JavaScript over the REST API v1, charts by uPlot (vendored).
// The token comes from the input box or `#token=...` in the URL and is kept in
// sessionStorage; nothing is shown without one. Panels poll every 2 s; a panel whose
// endpoint is missing or empty says "no data yet". All data goes into the DOM as text.
(function () {
  'use strict';

  var POLL_MS = 2000;
  var SLOW_EVERY = 3; // probes, shares, model, notifications: every third poll
  var WINDOW_MS = 15 * 60 * 1000; // history kept on screen
  var RING = 900; // client-side points per series (capacity against load)
  var TOKEN_KEY = 'plb-token';
  var COLORS = ['#2f6fdb', '#d9480f', '#2b8a3e', '#862e9c', '#c2255c', '#1098ad', '#5c940d', '#e67700'];

  var S = {
    token: null,
    pools: [],
    pool: null,
    nodes: [],
    node: null,
    metric: null,
    hist: { key: null, points: [], given: {}, endpoint: true },
    cap: {}, // node -> [[t_s, load, capacity]]
    notes: [],
    noteSince: 0,
    probesCache: null,
    tick: 0,
    timer: null,
    charts: {},
    running: false,
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === 'text') e.textContent = attrs[k];
        else if (k === 'cls') e.className = attrs[k];
        else e.setAttribute(k, attrs[k]);
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c != null) e.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }

  function fmt(v) {
    if (v == null || !isFinite(v)) return '–';
    var a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 1) return v.toFixed(2);
    return v.toPrecision(3);
  }

  // Axis labels: short (1.2k, 3.4M).
  function axisFmt(u, vals) {
    return vals.map(function (v) {
      if (v == null) return '';
      var a = Math.abs(v);
      if (a >= 1e6) return +(v / 1e6).toFixed(2) + 'M';
      if (a >= 1e4) return +(v / 1e3).toFixed(1) + 'k';
      return +v.toFixed(4) + '';
    });
  }

  // y from 0 (or below, for negative data) with some headroom.
  function fromZero(u, min, max) {
    var lo = Math.min(0, min == null ? 0 : min);
    var hi = max == null || max <= lo ? lo + 1 : max * 1.15;
    return [lo, hi];
  }

  // Time axis: a single point gets `pad` seconds around it (uPlot would show a day,
  // or years once the axis is split).
  // Wall-clock time axis labels: HH:MM:SS, never uPlot's sub-second ":43.000" (x values
  // are seconds with millisecond fractions, which its default formats as such).
  function two(n) { return (n < 10 ? '0' : '') + n; }
  var TIME_AXIS = {
    values: function (u, vals) {
      return vals.map(function (v) {
        if (v == null) return '';
        var d = new Date(v * 1000);
        return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
      });
    },
  };

  function timeRange(pad) {
    return function (u, min, max) {
      var xs = u.data && u.data[0];
      if (xs && xs.length && xs[xs.length - 1] === xs[0]) return [xs[0] - pad / 2, xs[0] + pad / 2];
      return [min, max];
    };
  }

  function pct(v) { return v == null || !isFinite(v) ? '–' : (v * 100).toFixed(v < 0.1 ? 1 : 0) + ' %'; }

  function ago(ms) {
    if (ms == null) return 'never';
    var s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    return Math.round(s / 3600) + ' h ago';
  }

  function badge(kind) { return el('span', { cls: 'badge ' + kind, text: kind.replace('_', ' ') }); }

  function showMessage(text, info) {
    var m = $('message');
    m.textContent = text;
    m.className = 'message' + (info ? ' info' : '');
    m.hidden = !text;
  }

  function setStatus(text) { $('status').textContent = text; }

  // ---- API ---------------------------------------------------------------------------

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }

  function api(path) {
    return fetch(path, {
      headers: { Authorization: 'Bearer ' + S.token, Accept: 'application/json' },
      cache: 'no-store',
    }).then(function (r) {
      if (r.ok) return r.json();
      return r.json().then(
        function (b) {
          var e = (b && b.error) || {};
          throw new ApiError(r.status, e.code || '', e.message || r.statusText);
        },
        function () { throw new ApiError(r.status, '', r.statusText); }
      );
    });
  }

  // A panel's data: null when the endpoint does not exist (yet) or the thing is gone,
  // so the panel says "no data yet"; auth errors propagate and stop the dashboard.
  function optional(path) {
    return api(path).catch(function (e) {
      if (e instanceof ApiError && (e.status === 404 || e.status === 405 || e.status === 501)) return null;
      throw e;
    });
  }

  function enc(s) { return encodeURIComponent(s); }

  // ---- token -------------------------------------------------------------------------

  function tokenFromFragment() {
    var m = /(?:^#|&)token=([^&]*)/.exec(location.hash || '');
    if (!m) return;
    var t = decodeURIComponent(m[1]).trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    // Keep the token out of the address bar and history.
    history.replaceState(null, '', location.pathname + location.search);
  }

  function useToken(t) {
    S.token = t || null;
    stop();
    resetData();
    if (!S.token) {
      $('main').hidden = true;
      showMessage('Enter a client API token (plb dev prints one and writes it to DATA/dev.json) to see your pools.', true);
      setStatus('');
      return;
    }
    showMessage('');
    start();
  }

  function resetData() {
    S.pools = [];
    S.pool = null;
    S.nodes = [];
    S.node = null;
    S.metric = null;
    S.hist = { key: null, points: [], given: {}, endpoint: true };
    S.cap = {};
    S.notes = [];
    S.noteSince = 0;
    S.tick = 0;
    Object.keys(S.charts).forEach(function (k) { S.charts[k].destroy(); });
    S.charts = {};
  }

  // ---- polling -----------------------------------------------------------------------

  function start() {
    S.running = true;
    S.gen = (S.gen || 0) + 1; // a poll of an earlier generation does not reschedule
    S.busy = false;
    poll();
  }

  function stop() {
    S.running = false;
    if (S.timer) clearTimeout(S.timer);
    S.timer = null;
  }

  function poll() {
    if (!S.running) return;
    S.timer = null;
    // A background tab does not poll; it catches up when shown again.
    if (document.hidden) return;
    S.busy = true;
    var gen = S.gen;
    var slow = S.tick % SLOW_EVERY === 0;
    var p = (slow || !S.pools.length ? loadPools() : Promise.resolve())
      .then(function () {
        // The token works: show the panels before drawing, so charts get their width.
        if ($('main').hidden) {
          $('main').hidden = false;
          resize();
        }
        if (!S.pool) return null;
        var jobs = [loadNodes().then(loadHistory)];
        if (slow) jobs.push(loadShares(), loadProbes(), loadModel(), loadNotifications(), loadChanges(), loadScaling());
        return Promise.all(jobs);
      })
      .then(function () {
        $('main').dataset.updates = String(Number($('main').dataset.updates || 0) + 1);
        setStatus('updated ' + new Date().toLocaleTimeString());
      })
      .catch(function (e) {
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
          stop();
          $('main').hidden = true;
          showMessage(
            (e.status === 401 ? 'The API refused this token' : 'This token may not read pools') +
              ' (' + e.status + ' ' + e.code + '): ' + e.message +
              '. Enter a client API token.'
          );
          setStatus('');
          return;
        }
        setStatus('update failed: ' + (e.message || e) + ' (retrying)');
      })
      .then(function () {
        if (gen !== S.gen) return;
        S.tick++;
        S.busy = false;
        if (S.running) S.timer = setTimeout(poll, POLL_MS);
      });
    return p;
  }

  // ---- pools -------------------------------------------------------------------------

  function loadPools() {
    return api('/v1/pools').then(function (b) {
      S.pools = b.pools || [];
      if (!S.pool || !S.pools.some(function (p) { return p.name === S.pool; })) {
        var demo = S.pools.filter(function (p) { return p.name === 'demo'; })[0];
        S.pool = demo ? demo.name : S.pools.length ? S.pools[0].name : null;
      }
      renderPools();
    });
  }

  function renderPools() {
    var box = $('pools');
    box.textContent = '';
    if (!S.pools.length) {
      box.appendChild(el('p', { cls: 'empty', text: 'no pools yet (create one with plb pool create)' }));
      return;
    }
    S.pools.forEach(function (p) {
      var b = el('button', {
        type: 'button',
        'data-pool': p.name,
        cls: p.name === S.pool ? 'selected' : '',
        text: p.name + ' · ' + p.nodes + ' nodes · ' + p.probes + ' probes · ' + p.policy + ' · SLO ' + fmt(p.latency_slo_ms) + ' ms',
      });
      b.addEventListener('click', function () { selectPool(p.name); });
      box.appendChild(b);
    });
    $('pool-name').textContent = S.pool ? 'in ' + S.pool : '';
  }

  function selectPool(name) {
    if (name === S.pool) return;
    var token = S.token;
    resetData();
    S.token = token;
    S.pool = name;
    stop();
    start();
  }

  // ---- nodes -------------------------------------------------------------------------

  function metricsOf(n) {
    var a = n.assessment;
    if (a && a.metrics && a.metrics.length) return a.metrics.map(function (m) { return m.name; });
    var out = [];
    (n.latest || []).forEach(function (s) {
      Object.keys(s.metrics || {}).forEach(function (k) { out.push(s.probe + '/' + k); });
    });
    return out.sort();
  }

  function loadNodes() {
    return api('/v1/pools/' + enc(S.pool) + '/nodes').then(function (b) {
      S.nodes = b.nodes || [];
      var t = Date.now() / 1000;
      S.nodes.forEach(function (n) {
        var d = n.assessment && n.assessment.demand;
        var r = n.routing;
        var load = d ? d.load : r ? r.in_flight : null;
        var cap = d && d.capacity != null ? d.capacity : r ? r.capacity : null;
        var ring = S.cap[n.node] || (S.cap[n.node] = []);
        ring.push([t, load == null ? null : load, cap == null ? null : cap]);
        if (ring.length > RING) ring.shift();
      });
      if (!S.node || !S.nodes.some(function (n) { return n.node === S.node; })) {
        S.node = S.nodes.length ? S.nodes[0].node : null;
      }
      var node = currentNode();
      var names = node ? metricsOf(node) : [];
      if (!S.metric || names.indexOf(S.metric) < 0) S.metric = defaultMetric(node, names);
      renderNodes();
      renderTrust(b.metric_trust || []);
      renderSelectors(names);
      drawCapacity();
    });
  }

  function currentNode() {
    return S.nodes.filter(function (n) { return n.node === S.node; })[0] || null;
  }

  function currentAssessment() {
    var n = currentNode();
    var a = n && n.assessment;
    if (!a || !a.metrics) return null;
    return a.metrics.filter(function (m) { return m.name === S.metric; })[0] || null;
  }

  // Prefer a metric the node is judged on (its evidence), then the HTTP check's total
  // time, then the series with the most samples.
  function defaultMetric(node, names) {
    if (!names.length) return null;
    var a = node && node.assessment;
    if (a) {
      var ev = (a.evidence || []).filter(function (e) { return names.indexOf(e.metric) >= 0; })[0];
      if (ev) return ev.metric;
      var ms = (a.metrics || []).slice().sort(function (x, y) { return y.samples - x.samples; });
      var http = ms.filter(function (m) { return /\/http-total-ms$/.test(m.name) && m.samples > 2; })[0];
      if (http) return http.name;
      if (ms.length) return ms[0].name;
    }
    return names[0];
  }

  function renderNodes() {
    var tb = $('nodes').tBodies[0];
    tb.textContent = '';
    if (!S.nodes.length) {
      tb.appendChild(el('tr', { cls: 'empty' }, el('td', { colspan: '8', text: 'no nodes yet' })));
      return;
    }
    S.nodes.forEach(function (n) {
      var a = n.assessment;
      var state = a ? a.state : n.routing ? n.routing.state : 'unknown';
      var reason = a ? a.reason : 'no prediction yet';
      var d = a && a.demand;
      var r = n.routing;
      var load = d ? fmt(d.load) + ' → ' + fmt(d.forecast) : r ? fmt(r.in_flight) : '–';
      var cap = d && d.capacity != null ? fmt(d.capacity) : r && r.capacity != null ? fmt(r.capacity) : '–';
      var tr = el('tr', { 'data-node': n.node, 'data-state': state, cls: n.node === S.node ? 'selected' : '' },
        el('td', { text: n.node }),
        el('td', { text: n.address }),
        el('td', null, badge(state)),
        el('td', { cls: 'reason', text: reason, title: evidenceText(a) }),
        el('td', { text: load + ' / ' + cap }),
        el('td', { text: r ? pct(r.share) : '–' }),
        el('td', { text: r && r.latency_outlook_ms != null ? fmt(r.latency_outlook_ms) + ' ms' : '–' }),
        el('td', { text: ago(n.last_seen_ms) })
      );
      tr.addEventListener('click', function () { selectNode(n.node); });
      tb.appendChild(tr);
    });
  }

  // Each probe metric's trust: how much of a node's degrade score from it routing uses.
  function renderTrust(list) {
    var tb = $('trust').tBodies[0];
    tb.textContent = '';
    if (!list.length) {
      tb.appendChild(el('tr', { cls: 'empty' }, el('td', { colspan: '4', text: 'no probe metrics compared across nodes yet' })));
      return;
    }
    list.forEach(function (m) {
      tb.appendChild(el('tr', { 'data-metric': m.metric, 'data-trust': String(m.trust) },
        el('td', { text: m.metric }),
        el('td', { text: pct(m.trust) }),
        el('td', { text: fmt(m.correlation) + ' (' + Math.round(m.pairs) + ' pairs)' }),
        el('td', { cls: 'reason', text: m.reason })
      ));
    });
  }

  function evidenceText(a) {
    if (!a || !a.evidence || !a.evidence.length) return '';
    return a.evidence.map(function (e) {
      return e.metric + ': forecast ' + fmt(e.forecast) + ' vs threshold ' + fmt(e.threshold) + ' at h=' + e.horizon + ' (' + e.reason + ')';
    }).join('\n');
  }

  function renderSelectors(names) {
    var ns = $('node-select');
    var want = S.nodes.map(function (n) { return n.node; }).join('\n');
    if (ns.dataset.opts !== want) {
      ns.textContent = '';
      S.nodes.forEach(function (n) { ns.appendChild(el('option', { value: n.node, text: n.node })); });
      ns.dataset.opts = want;
    }
    ns.value = S.node || '';
    var ms = $('metric-select');
    var wantM = names.join('\n');
    if (ms.dataset.opts !== wantM) {
      ms.textContent = '';
      names.forEach(function (m) { ms.appendChild(el('option', { value: m, text: m })); });
      ms.dataset.opts = wantM;
    }
    ms.value = S.metric || '';
  }

  function selectNode(node) {
    if (node === S.node) return;
    S.node = node;
    var n = currentNode();
    var names = n ? metricsOf(n) : [];
    if (names.indexOf(S.metric) < 0) S.metric = defaultMetric(n, names);
    renderNodes();
    renderSelectors(names);
    refreshHistory();
  }

  function selectMetric(m) {
    if (m === S.metric) return;
    S.metric = m;
    refreshHistory();
  }

  function refreshHistory() {
    loadHistory().catch(function (e) { setStatus('update failed: ' + e.message); });
  }

  // Stored state changes of the pool's nodes in the last hour, newest first.
  function loadChanges() {
    var since = Date.now() - 60 * 60 * 1000;
    return optional('/v1/pools/' + enc(S.pool) + '/state-changes?since=' + since).then(function (b) {
      var ul = $('changes');
      ul.textContent = '';
      var list = (b && b.changes) || [];
      if (!list.length) {
        ul.appendChild(el('li', { cls: 'empty', text: b ? 'no state changes in the last hour' : 'no data yet' }));
        return;
      }
      list.slice(-30).reverse().forEach(function (c) {
        ul.appendChild(el('li', { 'data-change': c.node },
          el('span', { cls: 'when', text: new Date(c.at_ms).toLocaleTimeString() }),
          el('strong', { text: c.node }), ' ',
          badge(c.from), ' → ', badge(c.to), ' ',
          el('span', { cls: 'muted', text: c.reason })
        ));
      });
    });
  }

  // ---- metric history, forecast, interval, threshold ---------------------------------

  function loadHistory() {
    if (!S.node || !S.metric) {
      drawMetric();
      return Promise.resolve();
    }
    var key = S.pool + '\n' + S.node + '\n' + S.metric;
    if (S.hist.key !== key) S.hist = { key: key, points: [], given: {}, endpoint: S.hist.endpoint };
    var h = S.hist;
    var cutoff = Date.now() - WINDOW_MS;
    var fromLatest = function () {
      // No history endpoint: keep what the node view's newest samples show.
      var n = currentNode();
      var slash = S.metric.indexOf('/');
      var probe = S.metric.slice(0, slash), name = S.metric.slice(slash + 1);
      (n && n.latest || []).forEach(function (s) {
        var v = s.probe === probe && s.metrics ? s.metrics[name] : undefined;
        var last = h.points[h.points.length - 1];
        if (typeof v === 'number' && (!last || s.taken_at_ms > last[0])) h.points.push([s.taken_at_ms, v]);
      });
    };
    var done = function () {
      while (h.points.length && h.points[0][0] < cutoff) h.points.shift();
      if (S.hist === h) drawMetric();
    };
    if (!h.endpoint) {
      fromLatest();
      done();
      return Promise.resolve();
    }
    var last = h.points[h.points.length - 1];
    var q = '?metric=' + enc(S.metric) + (last ? '&since=' + (last[0] + 1) : '');
    return optional('/v1/pools/' + enc(S.pool) + '/nodes/' + enc(S.node) + '/history' + q).then(function (b) {
      if (S.hist !== h) return;
      if (b === null) {
        h.endpoint = false;
        fromLatest();
      } else {
        (b.points || []).forEach(function (p) {
          var tail = h.points[h.points.length - 1];
          if (!tail || p[0] > tail[0]) h.points.push([p[0], p[1]]);
        });
      }
      done();
    });
  }

  function chartWidth(box) { return Math.max(300, box.clientWidth || 600); }

  // Creates or updates the uPlot chart `id` in `box`; a new series layout recreates it.
  function plot(id, box, opts, data, layout) {
    var c = S.charts[id];
    if (c && c._layout === layout) {
      c.setData(data);
      return c;
    }
    if (c) c.destroy();
    box.textContent = '';
    opts.width = chartWidth(box);
    c = new uPlot(opts, data, box);
    c._layout = layout;
    S.charts[id] = c;
    return c;
  }

  function noData(id, box, text) {
    if (S.charts[id]) {
      S.charts[id].destroy();
      delete S.charts[id];
    }
    box.textContent = '';
    box.appendChild(el('p', { cls: 'empty', text: text || 'no data yet' }));
    box.dataset.points = '0';
  }

  function drawMetric() {
    var box = $('metric-chart');
    var info = $('metric-info');
    // The chosen span before the newest sample (the whole 15 min are kept).
    var span = Number($('window-select').value || 120) * 1000;
    var all = S.hist.points;
    var newest = all.length ? all[all.length - 1][0] : 0;
    var pts = all.filter(function (p) { return p[0] >= newest - span; });
    var m = currentAssessment();
    if (!S.metric) {
      info.textContent = '';
      return noData('metric', box, 'no metrics yet for this node');
    }
    // x positions: samples, then the forecast horizons from the newest sample on.
    var fc = [];
    if (m && m.forecasts && m.forecasts.length && m.last_seen_ms != null) {
      fc.push([m.last_seen_ms, m.last_value, m.last_value, m.last_value]);
      m.forecasts.forEach(function (f) {
        var ahead = f.approx_ms != null ? f.approx_ms : f.h * (m.step_ms || 1000);
        fc.push([m.last_seen_ms + ahead, f.mean, f.lo, f.hi]);
      });
    }
    // The shortest-horizon forecast of every poll, kept to show against what happened.
    var given = S.hist.given;
    if (m && fc.length > 1) given[fc[1][0]] = fc[1][1];
    var cutoff = Date.now() - WINDOW_MS;
    var past = [];
    Object.keys(given).forEach(function (t) {
      t = Number(t);
      if (t < cutoff) delete given[t];
      else if (m && t <= m.last_seen_ms && t >= newest - span) past.push([t, given[t]]);
    });
    if (!pts.length && !fc.length) return noData('metric', box);
    var xsMap = {};
    pts.forEach(function (p) { xsMap[p[0]] = true; });
    fc.forEach(function (p) { xsMap[p[0]] = true; });
    past.forEach(function (p) { xsMap[p[0]] = true; });
    var xs = Object.keys(xsMap).map(Number).sort(function (a, b) { return a - b; });
    var idx = {};
    xs.forEach(function (x, i) { idx[x] = i; });
    var col = function () { return xs.map(function () { return null; }); };
    var val = col(), mean = col(), flo = col(), fhi = col(), plo = col(), phi = col(), was = col();
    past.forEach(function (p) { was[idx[p[0]]] = p[1]; });
    pts.forEach(function (p) { val[idx[p[0]]] = p[1]; });
    fc.forEach(function (p) {
      var i = idx[p[0]];
      mean[i] = p[1];
      flo[i] = p[2];
      fhi[i] = p[3];
    });
    var prof = m && m.profile;
    if (prof) {
      for (var i = 0; i < xs.length; i++) {
        plo[i] = prof.lo;
        phi[i] = prof.hi;
      }
    }
    // A metric that has never been negative (latency, queue depth, a count) cannot
    // go below zero: intervals and bands are drawn from 0, not below it.
    var nonNegative = pts.every(function (p) { return p[1] == null || p[1] >= 0; }) &&
      (!m || m.last_value == null || m.last_value >= 0);
    if (nonNegative) {
      var floor0 = function (v) { return v == null ? v : Math.max(0, v); };
      flo = flo.map(floor0);
      plo = plo.map(floor0);
    }
    var data = [xs.map(function (x) { return x / 1000; }), val, mean, flo, fhi, plo, phi, was];
    var opts = {
      height: 280,
      cursor: { drag: { x: true, y: true, uni: 30 } },
      scales: { x: { time: true, range: timeRange(30) } },
      series: [
        {},
        { label: S.metric, stroke: '#2f6fdb', width: 1.5, points: { show: true, size: 4 } },
        { label: 'forecast', stroke: '#862e9c', width: 1.5, dash: [6, 4], spanGaps: true },
        { label: 'interval lo', stroke: 'rgba(134,46,156,0.45)', width: 1, spanGaps: true, points: { show: false } },
        { label: 'interval hi', stroke: 'rgba(134,46,156,0.45)', width: 1, spanGaps: true, points: { show: false } },
        { label: 'band lo', stroke: '#2b8a3e', width: 1, dash: [2, 3], points: { show: false } },
        { label: 'band hi', stroke: '#2b8a3e', width: 1, dash: [2, 3], points: { show: false } },
        {
          label: 'earlier forecasts',
          stroke: '#e67700',
          paths: function () { return null; },
          points: { show: true, size: 6, fill: '#e67700' },
        },
      ],
      bands: [
        { series: [4, 3], fill: 'rgba(134,46,156,0.12)' },
        { series: [6, 5], fill: 'rgba(43,138,62,0.06)' },
      ],
      axes: [TIME_AXIS, { size: 60, values: axisFmt }],
    };
    plot('metric', box, opts, data, 'metric');
    box.dataset.points = String(pts.length);
    box.dataset.forecasts = String(Math.max(0, fc.length - 1));
    box.dataset.earlier = String(past.length);
    box.dataset.metric = S.metric;
    box.dataset.node = S.node || '';
    var parts = [];
    if (m) {
      parts.push(m.samples + ' samples learnt');
      parts.push('direction ' + m.direction.replace(/_/g, ' '));
      if (prof) parts.push('band ' + fmt(nonNegative ? Math.max(0, prof.lo) : prof.lo) + ' … ' + fmt(prof.hi) + (prof.ready ? '' : ' (still learning)'));
      if (m.forecasts && m.forecasts.length) parts.push('model ' + m.forecasts[0].model);
      var e = (m.errors || [])[0];
      if (e && e.relative_to_naive != null) parts.push('h=' + e.h + ' error ' + fmt(e.relative_to_naive) + '× last-value');
    } else {
      parts.push('no prediction for this metric yet');
    }
    info.textContent = parts.join(' · ');
  }

  // ---- capacity against load ---------------------------------------------------------

  function drawCapacity() {
    var box = $('capacity-chart');
    var nodes = Object.keys(S.cap).sort();
    var any = nodes.some(function (n) { return S.cap[n].some(function (r) { return r[1] != null || r[2] != null; }); });
    if (!any) return noData('capacity', box);
    var xsMap = {};
    nodes.forEach(function (n) { S.cap[n].forEach(function (r) { xsMap[r[0]] = true; }); });
    var xs = Object.keys(xsMap).map(Number).sort(function (a, b) { return a - b; });
    var idx = {};
    xs.forEach(function (x, i) { idx[x] = i; });
    var data = [xs];
    var series = [{}];
    var points = 0;
    nodes.forEach(function (n, k) {
      var load = xs.map(function () { return null; });
      var cap = xs.map(function () { return null; });
      S.cap[n].forEach(function (r) {
        load[idx[r[0]]] = r[1];
        cap[idx[r[0]]] = r[2];
        if (r[1] != null) points++;
      });
      var color = COLORS[k % COLORS.length];
      data.push(load, cap);
      series.push(
        { label: n + ' load', stroke: color, width: 1.5, spanGaps: true, points: { show: xs.length < 3 } },
        { label: n + ' capacity', stroke: color, width: 1.5, dash: [6, 4], spanGaps: true, points: { show: xs.length < 3 } }
      );
    });
    var opts = {
      height: 220,
      scales: { x: { time: true, range: timeRange(30) }, y: { range: fromZero } },
      series: series,
      axes: [TIME_AXIS, { size: 50, values: axisFmt }],
    };
    plot('capacity', box, opts, data, 'capacity:' + nodes.join(','));
    box.dataset.points = String(points);
  }

  function loadModel() {
    return optional('/v1/pools/' + enc(S.pool) + '/model').then(function (m) {
      var p = $('capacity-info');
      if (!m) {
        p.textContent = 'Load: requests in flight (solid); capacity: in flight at the objective (dashed). No capacity model yet.';
        return;
      }
      var c = m.capacity;
      var parts = ['Load (solid) against predicted capacity (dashed), requests in flight at the ' + fmt(m.latency_slo_ms) + ' ms objective.'];
      if (c) {
        parts.push('Pool model: ' + (c.form || 'none') + ', capacity ' + fmt(c.pool_capacity) + ' per node from ' + c.rows_used + ' feedback rows' +
          (c.loo_error != null ? ', leave-one-out error ' + fmt(c.loo_error) : '') + ', fitted ' + ago(c.fitted_at_ms) + '.');
      } else {
        parts.push('No capacity model fitted yet (' + m.feedback_rows + ' feedback rows held).');
      }
      p.textContent = parts.join(' ');
    });
  }

  // ---- share of routed requests ------------------------------------------------------

  function loadShares() {
    var since = Date.now() - 60 * 60 * 1000;
    return optional('/v1/pools/' + enc(S.pool) + '/decisions?since=' + since).then(function (b) {
      var box = $('shares-chart');
      var minutes = (b && b.minutes) || [];
      if (!minutes.length) return noData('shares', box);
      var names = {};
      minutes.forEach(function (m) { m.nodes.forEach(function (n) { names[n.node] = true; }); });
      var nodes = Object.keys(names).sort();
      var data = [minutes.map(function (m) { return m.minute_ms / 1000; })];
      var series = [{}];
      nodes.forEach(function (n, k) {
        data.push(minutes.map(function (m) {
          var s = m.nodes.filter(function (x) { return x.node === n; })[0];
          return s ? s.share : 0;
        }));
        series.push({
          label: n,
          stroke: COLORS[k % COLORS.length],
          width: 1.5,
          points: { show: true, size: 5 },
          value: function (u, v) { return v == null ? '–' : pct(v); },
        });
      });
      var opts = {
        height: 220,
        scales: { x: { time: true, range: timeRange(180) }, y: { range: [0, 1] } },
        series: series,
        axes: [TIME_AXIS, { size: 50, values: function (u, vals) { return vals.map(function (v) { return Math.round(v * 100) + '%'; }); } }],
      };
      plot('shares', box, opts, data, 'shares:' + nodes.join(','));
      box.dataset.points = String(minutes.length);
      box.dataset.decisions = String(minutes.reduce(function (a, m) { return a + m.total; }, 0));
    });
  }

  // ---- demand, its forecast and nodes needed -----------------------------------------

  function loadScaling() {
    return optional('/v1/pools/' + enc(S.pool) + '/scaling').then(function (v) {
      var box = $('scaling-chart');
      var info = $('scaling-info');
      var hist = (v && v.history) || [];
      if (!v) {
        info.textContent = '';
        return noData('scaling', box);
      }
      var parts = [v.current_nodes + ' node(s) in service'];
      if (v.demand_rps != null) parts.push('demand ' + fmt(v.demand_rps) + ' req/s');
      (v.horizons || []).forEach(function (h) {
        parts.push(h.horizon + ': ' + fmt(h.demand_rps) + ' req/s (' + fmt(h.demand_rps_lo) + '–' + fmt(h.demand_rps_hi) + ')' +
          (h.nodes != null ? ' → ' + h.nodes + ' node(s)' : ''));
      });
      if (v.node_capacity_rps != null) parts.push(fmt(v.node_capacity_rps) + ' req/s per node');
      if (v.advised != null) parts.push('advised ' + v.advised + (v.last_changed_ms ? ', changed ' + ago(v.last_changed_ms) : ''));
      info.textContent = parts.join(' · ') + '. ' + (v.reason || '');
      if (!hist.length) return noData('scaling', box);
      // Demand at each minute; the forecast at the minute it is for.
      var xsMap = {};
      hist.forEach(function (p) { xsMap[p.minute_ms] = true; xsMap[p.forecast_for_ms] = true; });
      var xs = Object.keys(xsMap).map(Number).sort(function (a, b) { return a - b; });
      var idx = {};
      xs.forEach(function (x, i) { idx[x] = i; });
      var col = function () { return xs.map(function () { return null; }); };
      var demand = col(), mean = col(), lo = col(), hi = col(), need = col(), have = col();
      hist.forEach(function (p) {
        var i = idx[p.minute_ms], j = idx[p.forecast_for_ms];
        demand[i] = p.demand_rps;
        need[i] = p.nodes_needed;
        have[i] = p.current_nodes;
        mean[j] = p.forecast_rps;
        lo[j] = p.forecast_rps_lo;
        hi[j] = p.forecast_rps_hi;
      });
      var data = [xs.map(function (x) { return x / 1000; }), demand, mean, lo, hi, need, have];
      var opts = {
        height: 240,
        scales: { x: { time: true, range: timeRange(300) }, y: { range: fromZero }, n: { range: fromZero } },
        series: [
          {},
          { label: 'demand req/s', stroke: COLORS[0], width: 1.5, spanGaps: true },
          { label: 'forecast', stroke: '#862e9c', width: 1.5, dash: [6, 4], spanGaps: true },
          { label: 'low', stroke: 'rgba(134,46,156,0.3)', width: 1, spanGaps: true },
          { label: 'high', stroke: 'rgba(134,46,156,0.3)', width: 1, spanGaps: true },
          { label: 'nodes needed', stroke: '#e67700', width: 2, scale: 'n', spanGaps: true, paths: uPlot.paths.stepped({ align: 1 }) },
          { label: 'nodes in service', stroke: '#868e96', width: 1, scale: 'n', spanGaps: true, paths: uPlot.paths.stepped({ align: 1 }) },
        ],
        bands: [{ series: [4, 3], fill: 'rgba(134,46,156,0.12)' }],
        axes: [TIME_AXIS, { size: 50, values: axisFmt }, { scale: 'n', side: 1, size: 40, grid: { show: false } }],
      };
      plot('scaling', box, opts, data, 'scaling');
      box.dataset.points = String(hist.length);
    });
  }

  // ---- probes and their reliability --------------------------------------------------

  function loadProbes() {
    var base = '/v1/pools/' + enc(S.pool) + '/probes';
    return optional(base).then(function (b) {
      var list = (b && b.probes) || [];
      return Promise.all(list.map(function (p) {
        return optional(base + '/' + enc(p.name)).then(function (d) { return d || p; });
      }));
    }).then(renderProbes);
  }

  function renderProbes(list) {
    var tb = $('probes').tBodies[0];
    tb.textContent = '';
    if (!list.length) {
      tb.appendChild(el('tr', { cls: 'empty' }, el('td', { colspan: '6', text: 'no probes yet' })));
      return;
    }
    list.forEach(function (p) {
      var r = p.reliability;
      var ev = r && r.evidence;
      var rate = ev ? pct(ev.failure_rate) + ' (' + pct(ev.failure_rate_lo) + '–' + pct(ev.failure_rate_hi) + ') of ' + ev.runs + ' runs' : '–';
      tb.appendChild(el('tr', { 'data-probe': p.name },
        el('td', { text: p.name }),
        el('td', { text: 'v' + p.version }),
        el('td', { text: p.tier || '' }),
        el('td', null, r ? badge(r.state) : el('span', { cls: 'muted', text: 'not known yet' }), r && r.excluded ? ' excluded' : null),
        el('td', { text: rate }),
        el('td', { cls: 'reason', text: ev ? ev.reason : '' })
      ));
    });
  }

  // ---- notifications -----------------------------------------------------------------

  function loadNotifications() {
    return optional('/v1/notifications?since=' + S.noteSince).then(function (b) {
      if (b) {
        S.notes = S.notes.concat(b.notifications || []).slice(-50);
        if (typeof b.next_since === 'number') S.noteSince = b.next_since;
      }
      renderNotifications(b !== null);
    });
  }

  function renderNotifications(available) {
    var ul = $('notifications');
    ul.textContent = '';
    if (!S.notes.length) {
      ul.appendChild(el('li', { cls: 'empty', text: available ? 'no notifications' : 'no data yet' }));
      return;
    }
    S.notes.slice().reverse().forEach(function (n) {
      ul.appendChild(el('li', { 'data-notification': String(n.id) },
        badge(n.kind), ' ',
        el('strong', { text: n.pool + '/' + n.probe + ' v' + n.version }), ' ',
        el('span', { cls: 'muted', text: ago(n.created_at_ms) }),
        el('div', { text: n.summary })
      ));
    });
  }

  // ---- wiring ------------------------------------------------------------------------

  function resize() {
    Object.keys(S.charts).forEach(function (k) {
      var c = S.charts[k];
      var box = c.root.parentNode;
      if (box && box.clientWidth && c.width !== chartWidth(box)) c.setSize({ width: chartWidth(box), height: c.height });
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('token-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = $('token-input').value.trim();
      $('token-input').value = '';
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      useToken(t || sessionStorage.getItem(TOKEN_KEY));
    });
    $('token-forget').addEventListener('click', function () {
      sessionStorage.removeItem(TOKEN_KEY);
      useToken(null);
    });
    $('node-select').addEventListener('change', function (ev) { selectNode(ev.target.value); });
    $('metric-select').addEventListener('change', function (ev) { selectMetric(ev.target.value); });
    $('window-select').addEventListener('change', drawMetric);
    window.addEventListener('resize', resize);
    document.addEventListener('visibilitychange', function () {
      if (!document.hidden && S.running && !S.busy) {
        if (S.timer) clearTimeout(S.timer);
        poll();
      }
    });
    window.addEventListener('hashchange', function () {
      tokenFromFragment();
      var t = sessionStorage.getItem(TOKEN_KEY);
      if (t && t !== S.token) useToken(t);
    });
    tokenFromFragment();
    useToken(sessionStorage.getItem(TOKEN_KEY));
  });
})();
