// Drives the voicefleet browser client in Debian Chromium with playwright-core (never a
// browser download). Run by tests/e2e/test_browser.py; prints one JSON line with what it saw.
//
// env: GATEWAY_URL, GATEWAY_TOKEN, AGENT_NAME (default Agent_66), ARTIFACTS (screenshots),
//      E2E_HOME (HOME/TMPDIR/profile of the browser), MIC_WAV (fake microphone input),
//      E2E_MODE = "list" (open the page, list agents) | "converse" (connect, hear the agent,
//      type a message, disconnect, reconnect CYCLES times) | "join" (connect and join the
//      room, no agent expected: type a message, disconnect, reconnect), CYCLES (default 5),
//      TYPED (the typed message), EXPECT_TYPED (text the answer to it must contain),
//      EXPECT_SPOKEN (text the answer to the microphone must contain; default: any answer),
//      WAIT_USER_SEEN=1: before disconnecting, wait (asking the gateway) until the operator
//      has seen the user in the room, so that leaving ends the connection as UserLeft.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = process.env;
const url = env.GATEWAY_URL;
const agentName = env.AGENT_NAME || 'Agent_66';
const artifacts = env.ARTIFACTS || 'test-artifacts/e2e';
const home = env.E2E_HOME || join(artifacts, 'home');
const mode = env.E2E_MODE || 'list';
const cycles = Number(env.CYCLES || 5);
const READY_MS = Number(env.READY_TIMEOUT_MS || 180000);
const ANSWER_MS = Number(env.ANSWER_TIMEOUT_MS || 90000);
mkdirSync(artifacts, { recursive: true });
mkdirSync(home, { recursive: true });

const args = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost, EXCLUDE 127.0.0.1',
];
if (env.MIC_WAV) args.push(`--use-file-for-fake-audio-capture=${env.MIC_WAV}`);

const result = { mode, agents: [], cycles: [], typed: null, console: [] };
let step = 0;
const shot = async (page, name) => {
  step += 1;
  await page.screenshot({ path: join(artifacts, `${String(step).padStart(2, '0')}-${name}.png`), fullPage: true });
};

const context = await chromium.launchPersistentContext(join(home, 'profile'), {
  executablePath: env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args,
  env: { ...env, HOME: home, TMPDIR: home },
  permissions: ['microphone'],
  viewport: { width: 1000, height: 800 },
});
const page = context.pages()[0] || await context.newPage();
page.on('console', (msg) => result.console.push(`${msg.type()}: ${msg.text()}`.slice(0, 300)));
page.on('pageerror', (err) => result.console.push(`pageerror: ${err.message}`.slice(0, 300)));

async function userSeen() {
  if (env.WAIT_USER_SEEN !== '1') return;
  const session = (await page.textContent('#session-info')).split(' · ')[0];
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const res = await fetch(`${url}/api/sessions/${session}`,
      { headers: { Authorization: `Bearer ${env.GATEWAY_TOKEN}` } });
    if (res.ok && (await res.json()).connection?.userJoinedAt) return;
    await new Promise((resolve) => setTimeout(resolve, 500)); // polling the test's own probe
  }
  throw new Error(`the operator did not see the user join ${session} within 30 s`);
}

async function disconnectAndCheck(i) {
  await userSeen();
  await page.click('#disconnect');
  await page.waitForSelector('body[data-state="disconnected"]', { timeout: 90000 });
  const error = await page.textContent('#error');
  if (error) throw new Error(`cycle ${i}: disconnect reported an error: ${error}`);
}

async function agentLines() {
  return page.$$eval('#transcript li.agent .text', (els) => els.map((e) => e.textContent));
}

async function waitForAgentLine(after, predicate, label) {
  const deadline = Date.now() + ANSWER_MS;
  while (Date.now() < deadline) {
    const lines = (await agentLines()).slice(after);
    const hit = lines.find((l) => l && predicate(l));
    if (hit) return hit;
    await page.waitForFunction(
      (n) => document.querySelectorAll('#transcript li.agent').length > n
        || [...document.querySelectorAll('#transcript li.agent')].some((li) => !li.classList.contains('partial')),
      after, { timeout: 2000 },
    ).catch(() => {});
  }
  throw new Error(`no agent answer (${label}) within ${ANSWER_MS} ms; lines: ${JSON.stringify(await agentLines())}`);
}

let failure = null;
try {
  // The token goes in the fragment: it never reaches a server log.
  await page.goto(`${url}/#token=${encodeURIComponent(env.GATEWAY_TOKEN)}`);
  await page.waitForSelector('body[data-state="idle"]', { timeout: 30000 });
  result.agents = await page.$$eval('#agent option', (os) => os.map((o) => ({ id: o.value, name: o.textContent })));
  await shot(page, 'agents');
  if (mode === 'join') {
    await page.selectOption('#agent', { label: agentName });
    for (let i = 1; i <= cycles; i += 1) {
      const started = Date.now();
      await page.click('#connect');
      await page.waitForSelector('body[data-state="waiting-for-agent"], body[data-state="ready"]',
        { timeout: READY_MS });
      const joinedMs = Date.now() - started;
      const info = await page.textContent('#session-info');
      await page.fill('#chat', `typed message ${i}`);
      await page.click('#send');
      await page.waitForFunction((t) => [...document.querySelectorAll('#transcript li.user .text')]
        .some((e) => e.textContent === t), `typed message ${i}`, { timeout: 10000 });
      await shot(page, `cycle${i}-joined`);
      await disconnectAndCheck(i);
      await shot(page, `cycle${i}-disconnected`);
      result.cycles.push({ cycle: i, joinedMs, info });
    }
  }
  if (mode === 'converse') {
    const option = result.agents.find((a) => a.name === agentName);
    if (!option) throw new Error(`agent ${agentName} is not offered: ${JSON.stringify(result.agents)}`);
    await page.selectOption('#agent', option.id);
    for (let i = 1; i <= cycles; i += 1) {
      const before = (await agentLines()).length;
      const started = Date.now();
      await page.click('#connect');
      await page.waitForSelector('body[data-state="ready"]', { timeout: READY_MS });
      const readyMs = Date.now() - started;
      await shot(page, `cycle${i}-ready`);
      // The fake microphone plays the WAV in a loop: the agent answers what it heard.
      const spoken = env.EXPECT_SPOKEN || '';
      const heard = await waitForAgentLine(before, (l) => l.includes(spoken), `cycle ${i} speech`);
      const cycle = { cycle: i, readyMs, answer: heard };
      if (i === 1 && env.TYPED) {
        // Type instead of speaking: mute first, or the looping microphone keeps starting new
        // turns that interrupt the answer to the typed message.
        await page.click('#mic');
        await page.waitForSelector('#mic[aria-pressed="false"]', { timeout: 10000 });
        const mark = (await agentLines()).length;
        await page.fill('#chat', env.TYPED);
        await page.click('#send');
        const expect = env.EXPECT_TYPED || env.TYPED;
        result.typed = await waitForAgentLine(mark, (l) => l.includes(expect), 'typed message');
        await shot(page, 'typed-answer');
      }
      const leaving = Date.now();
      await disconnectAndCheck(i);
      cycle.disconnectMs = Date.now() - leaving;
      await shot(page, `cycle${i}-disconnected`);
      result.cycles.push(cycle);
    }
  }
} catch (err) {
  failure = err;
  result.error = String(err?.message || err);
  await shot(page, 'failure').catch(() => {});
  result.state = await page.evaluate(() => document.body.dataset.state).catch(() => null);
  result.pageError = await page.textContent('#error').catch(() => null);
} finally {
  await context.close();
}
console.log(JSON.stringify(result));
process.exit(failure ? 1 : 0);
