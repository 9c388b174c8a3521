#!/usr/bin/env node
// Plays an HLS / LL-HLS stream with hls.js in Debian's Chromium (driven by playwright-core) and
// reports what the player saw as ONE JSON object on stdout.
//
//   node hls_play.mjs --url URL --seconds N [--low-latency true|false] [--page-origin ORIGIN]
//
// --low-latency defaults to true (hls.js `lowLatencyMode`). The player page is served (by
// playwright's request interception, no network) from the stream's own origin, so the stream
// needs no CORS headers; pass --page-origin http://other.invalid to play it cross-origin instead.
//
// Output: { ok, fatalErrors, nonFatalErrors, samples, currentTimeStart, currentTimeEnd,
//   advancedSeconds, latency: {min, median, max, last}, width, height, decodedFrames,
//   droppedFrames, ... } where a sample is taken every 500 ms. `currentTimeStart` is the first
//   sample where the video had data (readyState >= 2), was not seeking and currentTime > 0;
//   `advancedSeconds` = currentTimeEnd - currentTimeStart (null when playback never started).
//   `ok` = no fatal hls.js error, playback advanced and frames were decoded.
//
// Exit status: 0 whenever a report was printed (also when playback failed: read `ok` and the
// errors); non-zero only when the harness itself failed (chromium or node_modules missing, bad
// arguments, browser crash, hard timeout of seconds + 30). The browser is always closed and its
// temporary profile removed.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const HLS_JS = join(HERE, 'node_modules', 'hls.js', 'dist', 'hls.min.js');
const SAMPLE_MS = 500;
const MAX_ERRORS = 500;

const LAUNCH_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];

function die(code, msg) {
  process.stderr.write(`hls_play: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { url: null, seconds: null, lowLatency: true, pageOrigin: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (v === undefined) die(2, `missing value for ${a}`);
    i++;
    if (a === '--url') opts.url = v;
    else if (a === '--seconds') opts.seconds = Number(v);
    else if (a === '--low-latency') {
      if (v !== 'true' && v !== 'false') die(2, `--low-latency takes true or false, not ${v}`);
      opts.lowLatency = v === 'true';
    } else if (a === '--page-origin') opts.pageOrigin = v;
    else die(2, `unknown argument ${a}`);
  }
  if (!opts.url) die(2, 'usage: node hls_play.mjs --url URL --seconds N [--low-latency true|false]');
  if (!Number.isFinite(opts.seconds) || opts.seconds <= 0) die(2, '--seconds must be a positive number');
  let u;
  try {
    u = new URL(opts.url);
  } catch {
    die(2, `bad --url ${opts.url}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') die(2, `--url must be http(s): ${opts.url}`);
  opts.pageOrigin = new URL(opts.pageOrigin || u.origin).origin;
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

if (!existsSync(CHROMIUM)) {
  die(3, `${CHROMIUM} not found: run ./scripts/test (it installs it) or \`apt-get install chromium\``);
}
if (!existsSync(HLS_JS)) {
  die(3, `${HLS_JS} not found: run ./scripts/test or \`cd tests/browser && npm ci\``);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  die(3, `cannot load playwright-core (${e.message}): run ./scripts/test or \`cd tests/browser && npm ci\``);
}

// ------------------------------------------------------------------------------------------
// Browser lifetime: always closed, profile always removed, whole run bounded.
// ------------------------------------------------------------------------------------------

const profile = mkdtempSync(join(tmpdir(), 'zerocast-chromium-'));
let context = null;
let cleaning = null;

function cleanup() {
  if (!cleaning) {
    cleaning = (async () => {
      if (context) {
        const c = context;
        context = null;
        await Promise.race([c.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
      }
      try {
        rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
      } catch {}
    })();
  }
  return cleaning;
}

// Playwright kills the browser's process group on process exit even when close() hangs.
const state = { samples: [], partial: null };
const hardTimer = setTimeout(async () => {
  process.stderr.write(`hls_play: hard timeout after ${opts.seconds + 30} s\n`);
  if (state.partial) process.stdout.write(JSON.stringify({ ...state.partial(), harnessError: 'hard timeout' }) + '\n');
  await cleanup();
  process.exit(4);
}, (opts.seconds + 30) * 1000);

for (const [sig, n] of [['SIGTERM', 15], ['SIGINT', 2], ['SIGHUP', 1]]) {
  process.on(sig, async () => {
    process.stderr.write(`hls_play: ${sig}, closing the browser\n`);
    await cleanup();
    process.exit(128 + n);
  });
}

// ------------------------------------------------------------------------------------------
// In-page code (runs in Chromium)
// ------------------------------------------------------------------------------------------

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>hls_play</title></head>
<body style="margin:0;background:#000"><video id="v" muted playsinline width="640" height="360"></video></body></html>`;

function pageStart({ url, lowLatency }) {
  const video = document.getElementById('v');
  video.muted = true;
  const st = {
    t0: performance.now(),
    errors: [],
    errorCount: 0,
    fragmentsLoaded: 0,
    partsLoaded: 0,
    manifestParsedMs: null,
    firstFrameMs: null,
    playError: null,
    bufferCodecs: null,
  };
  window.__hp = st;
  if (!window.Hls || !Hls.isSupported()) {
    st.playError = 'Hls.isSupported() is false (no MediaSource?)';
    return { hlsVersion: window.Hls ? Hls.version : null, supported: false };
  }
  const hls = new Hls({ lowLatencyMode: lowLatency, debug: false });
  st.hls = hls;
  hls.on(Hls.Events.ERROR, (_ev, d) => {
    st.errorCount++;
    if (st.errors.length >= 500 && !d.fatal) return;
    const resp = d.response || {};
    st.errors.push({
      t: Math.round(performance.now() - st.t0),
      type: d.type,
      details: d.details,
      fatal: !!d.fatal,
      reason: d.reason || (d.error && d.error.message) || null,
      url: (d.frag && d.frag.url) || (d.part && d.part.url) || (d.context && d.context.url) || d.url || null,
      responseCode: typeof resp.code === 'number' ? resp.code : null,
    });
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    st.manifestParsedMs = Math.round(performance.now() - st.t0);
    video.play().catch((e) => {
      st.playError = String(e);
    });
  });
  // What is actually appended to MediaSource (the levels' CODECS are empty for a bare media playlist).
  hls.on(Hls.Events.BUFFER_CODECS, (_ev, d) => {
    const c = {};
    for (const k of ['video', 'audio', 'audiovideo']) {
      if (d[k]) c[k] = { codec: d[k].codec || null, container: d[k].container || null };
    }
    st.bufferCodecs = c;
  });
  hls.on(Hls.Events.FRAG_LOADED, (_ev, d) => {
    if (d.part) st.partsLoaded++;
    else st.fragmentsLoaded++;
  });
  hls.loadSource(url);
  hls.attachMedia(video);
  return {
    hlsVersion: Hls.version,
    supported: true,
    mse: {
      'avc1.64001f': MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f"'),
      'mp4a.40.2': MediaSource.isTypeSupported('audio/mp4; codecs="mp4a.40.2"'),
      'opus': MediaSource.isTypeSupported('audio/mp4; codecs="opus"'),
    },
  };
}

function pageSample() {
  const st = window.__hp;
  const video = document.getElementById('v');
  const hls = st.hls;
  const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  const num = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : null);
  let bufferAhead = null;
  for (let i = 0; i < video.buffered.length; i++) {
    if (video.buffered.start(i) <= video.currentTime + 0.1 && video.buffered.end(i) >= video.currentTime) {
      bufferAhead = video.buffered.end(i) - video.currentTime;
    }
  }
  const t = Math.round(performance.now() - st.t0);
  if (st.firstFrameMs === null && video.currentTime > 0 && video.readyState >= 2 && q && q.totalVideoFrames > 0) {
    st.firstFrameMs = t;
  }
  return {
    t,
    currentTime: video.currentTime,
    paused: video.paused,
    seeking: video.seeking,
    readyState: video.readyState,
    playbackRate: video.playbackRate,
    bufferAhead,
    latency: hls ? num(hls.latency) : null,
    targetLatency: hls ? num(hls.targetLatency) : null,
    width: video.videoWidth,
    height: video.videoHeight,
    level: hls ? hls.currentLevel : null,
    levels: hls
      ? (hls.levels || []).map((l) => ({
          width: l.width || null,
          height: l.height || null,
          bitrate: l.bitrate || null,
          videoCodec: l.videoCodec || null,
          audioCodec: l.audioCodec || null,
        }))
      : [],
    bufferCodecs: st.bufferCodecs,
    decodedFrames: q ? q.totalVideoFrames : null,
    droppedFrames: q ? q.droppedVideoFrames : null,
    errorCount: st.errorCount,
    fragmentsLoaded: st.fragmentsLoaded,
    partsLoaded: st.partsLoaded,
  };
}

function pageFinal() {
  const st = window.__hp;
  const video = document.getElementById('v');
  let played = 0;
  for (let i = 0; i < video.played.length; i++) played += video.played.end(i) - video.played.start(i);
  const d = st.hls && st.hls.latestLevelDetails ? st.hls.latestLevelDetails : null;
  return {
    errors: st.errors,
    errorCount: st.errorCount,
    fragmentsLoaded: st.fragmentsLoaded,
    partsLoaded: st.partsLoaded,
    manifestParsedMs: st.manifestParsedMs,
    firstFrameMs: st.firstFrameMs,
    playError: st.playError,
    playedSeconds: played,
    live: d ? !!d.live : null,
    partTarget: d ? d.partTarget || null : null,
    canBlockReload: d ? !!d.canBlockReload : null,
    mediaError: video.error ? { code: video.error.code, message: video.error.message } : null,
  };
}

// ------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function report(info, fin, extra) {
  const samples = state.samples;
  const started = samples.filter((s) => s.readyState >= 2 && !s.seeking && s.currentTime > 0);
  const first = started[0] || null;
  const last = samples[samples.length - 1] || null;
  const lat = samples.filter((s) => s.currentTime > 0 && s.latency !== null && s.latency > 0).map((s) => s.latency);
  const sized = samples.filter((s) => s.width > 0);
  const errors = fin ? fin.errors : [];
  const fatalErrors = errors.filter((e) => e.fatal);
  const nonFatalErrors = errors.filter((e) => !e.fatal);
  const currentTimeStart = first ? first.currentTime : null;
  const currentTimeEnd = last ? last.currentTime : null;
  const advancedSeconds = first && last ? last.currentTime - first.currentTime : null;
  const decodedFrames = last ? last.decodedFrames : null;
  const out = {
    ok: fatalErrors.length === 0 && advancedSeconds !== null && advancedSeconds > 0 && (decodedFrames || 0) > 0,
    url: opts.url,
    lowLatency: opts.lowLatency,
    seconds: opts.seconds,
    fatalErrors,
    nonFatalErrors,
    samples,
    currentTimeStart,
    currentTimeEnd,
    advancedSeconds,
    playedSeconds: fin ? fin.playedSeconds : null,
    latency: lat.length
      ? { min: Math.min(...lat), median: median(lat), max: Math.max(...lat), last: lat[lat.length - 1] }
      : { min: null, median: null, max: null, last: null },
    targetLatency: last ? last.targetLatency : null,
    width: sized.length ? sized[sized.length - 1].width : 0,
    height: sized.length ? sized[sized.length - 1].height : 0,
    levels: last ? last.levels : [],
    bufferCodecs: last ? last.bufferCodecs : null,
    decodedFrames,
    droppedFrames: last ? last.droppedFrames : null,
    fragmentsLoaded: fin ? fin.fragmentsLoaded : null,
    partsLoaded: fin ? fin.partsLoaded : null,
    live: fin ? fin.live : null,
    partTarget: fin ? fin.partTarget : null,
    canBlockReload: fin ? fin.canBlockReload : null,
    manifestParsedMs: fin ? fin.manifestParsedMs : null,
    firstFrameMs: fin ? fin.firstFrameMs : null,
    playError: fin ? fin.playError : null,
    mediaError: fin ? fin.mediaError : null,
    errorCount: fin ? fin.errorCount : null,
    pageErrors: extra.pageErrors,
    httpErrors: extra.httpErrors,
    failedRequests: extra.failedRequests,
    browserVersion: extra.browserVersion,
    hlsVersion: info ? info.hlsVersion : null,
    mse: info ? info.mse || null : null,
  };
  return out;
}

// ------------------------------------------------------------------------------------------
// Main
// ------------------------------------------------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const extra = { pageErrors: [], httpErrors: [], failedRequests: [], browserVersion: null };
let info = null;
let exitCode = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: LAUNCH_ARGS,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    timeout: 30000,
  });
  extra.browserVersion = context.browser() ? context.browser().version() : null;
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => extra.pageErrors.length < 50 && extra.pageErrors.push(String(e)));
  page.on('response', (r) => {
    if (r.status() >= 400 && extra.httpErrors.length < 50) extra.httpErrors.push({ url: r.url(), status: r.status() });
  });
  page.on('requestfailed', (r) => {
    if (extra.failedRequests.length < 50) extra.failedRequests.push({ url: r.url(), failure: r.failure() ? r.failure().errorText : null });
  });

  // The player page, served from the stream's origin without touching the network; the route is
  // removed once loaded so that media requests are not intercepted.
  const pageUrl = `${opts.pageOrigin}/__zerocast_hls_play__${process.pid}.html`;
  await page.route(pageUrl, (route) => route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: PAGE }));
  await page.goto(pageUrl, { waitUntil: 'load', timeout: 15000 });
  await page.unrouteAll();
  await page.addScriptTag({ path: HLS_JS });
  info = await page.evaluate(pageStart, { url: opts.url, lowLatency: opts.lowLatency });

  state.partial = () => report(info, null, extra);
  const t0 = Date.now();
  const end = t0 + opts.seconds * 1000;
  for (;;) {
    state.samples.push(await page.evaluate(pageSample));
    const next = t0 + state.samples.length * SAMPLE_MS;
    if (next > end) break;
    await sleep(Math.max(0, next - Date.now()));
  }
  const fin = await page.evaluate(pageFinal);
  if (fin.errors.length > MAX_ERRORS) fin.errors.length = MAX_ERRORS;
  process.stdout.write(JSON.stringify(report(info, fin, extra)) + '\n');
} catch (e) {
  process.stderr.write(`hls_play: harness failure: ${e && e.stack ? e.stack : e}\n`);
  exitCode = 5;
} finally {
  clearTimeout(hardTimer);
  await cleanup();
}
process.exit(exitCode);
