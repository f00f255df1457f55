// voicefleet browser client: choose an agent, connect through the gateway, talk or type,
// follow the transcript and the session state, disconnect (waiting for the gateway's
// answer), reconnect. The gateway hands out a join token for one room per connection.
import { ConnectionState, ParticipantKind, Room, RoomEvent, Track } from 'livekit-client';

const TOKEN_KEY = 'voicefleet.token';
const TRANSCRIPTION_TOPIC = 'lk.transcription';
const CHAT_TOPIC = 'lk.chat';
const AGENT_STATE_ATTRIBUTE = 'lk.agent.state';

const $ = (id) => document.getElementById(id);
const ui = {
  login: $('login'), loginForm: $('login-form'), tokenInput: $('token'), app: $('app'),
  agent: $('agent'), connect: $('connect'), disconnect: $('disconnect'), mic: $('mic'),
  state: $('state'), agentState: $('agent-state'), info: $('session-info'), error: $('error'),
  transcript: $('transcript'), chatForm: $('chat-form'), chat: $('chat'), send: $('send'),
  who: $('who'),
};

let bearer = null;
let room = null;
let current = null; // the gateway's answer: {session, connection, room, livekitUrl, token}
let leaving = false;
const segments = new Map();

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

// -- the gateway ---------------------------------------------------------------------------
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${bearer}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch { /* not JSON: reported below */ }
  if (res.status === 401) showLogin('Your access token was refused. Enter it again.');
  if (!res.ok) throw new ApiError(res.status, data?.error, data?.detail || res.statusText);
  return data;
}

function tokenFromFragment() {
  // `GATEWAY_URL/#token=…`: the fragment never reaches a server or its logs.
  const match = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

// -- UI state ------------------------------------------------------------------------------
function setState(state, text = state) {
  document.body.dataset.state = state;
  ui.state.textContent = text;
  const live = room !== null && ['waiting-for-agent', 'ready'].includes(state);
  const settled = ['idle', 'disconnected', 'failed'].includes(state);
  ui.connect.disabled = !settled || !ui.agent.value;
  ui.agent.disabled = !settled;
  ui.connect.textContent = current && settled ? 'Reconnect' : 'Connect';
  ui.disconnect.disabled = !(live || state === 'joining');
  ui.mic.disabled = !live;
  ui.chat.disabled = !live;
  ui.send.disabled = !live;
}

function setAgentState(text) {
  ui.agentState.textContent = text;
  document.body.dataset.agentState = text;
}

function showError(message) {
  ui.error.textContent = message || '';
}

function showLogin(message) {
  ui.app.hidden = true;
  ui.login.hidden = false;
  showError(message);
  ui.tokenInput.focus();
}

function addLine(kind, who, text, key) {
  let li = key ? segments.get(key) : null;
  if (!li) {
    li = document.createElement('li');
    li.className = kind;
    li.dataset.role = kind;
    const name = document.createElement('span');
    name.className = 'who';
    name.textContent = who;
    const body = document.createElement('span');
    body.className = 'text';
    li.append(name, body);
    ui.transcript.append(li);
    if (key) segments.set(key, li);
  }
  li.querySelector('.text').textContent = text;
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
  return li;
}

// -- the room ------------------------------------------------------------------------------
function agentInRoom(r) {
  return [...r.remoteParticipants.values()].find((p) => p.kind === ParticipantKind.AGENT);
}

function refreshAgent(r) {
  if (r !== room) return;
  const agent = agentInRoom(r);
  if (!agent) {
    setAgentState('not in the room');
    if (r.state === ConnectionState.Connected) setState('waiting-for-agent', 'waiting for the agent');
    return;
  }
  const speaking = agent.isSpeaking ? 'speaking' : null;
  setAgentState(speaking || agent.attributes[AGENT_STATE_ATTRIBUTE] || 'joined');
  if (r.state === ConnectionState.Connected) setState('ready', 'agent joined');
}

function wireRoom(r) {
  r.registerTextStreamHandler(TRANSCRIPTION_TOPIC, async (reader, participant) => {
    const attrs = reader.info.attributes || {};
    const key = attrs['lk.segment_id'] || reader.info.id;
    const mine = participant.identity === r.localParticipant.identity
      || attrs['lk.transcribed_track_id'] === [...r.localParticipant.audioTrackPublications.keys()][0];
    const kind = mine ? 'user' : 'agent';
    const li = addLine(kind, mine ? 'you' : 'agent', '', key);
    li.classList.add('partial');
    let text = '';
    for await (const chunk of reader) {
      text += chunk;
      addLine(kind, mine ? 'you' : 'agent', text, key);
    }
    if (attrs['lk.transcription_final'] !== 'false') li.classList.remove('partial');
  });
  r.on(RoomEvent.ParticipantConnected, () => refreshAgent(r))
    .on(RoomEvent.ParticipantDisconnected, () => refreshAgent(r))
    .on(RoomEvent.ParticipantAttributesChanged, () => refreshAgent(r))
    .on(RoomEvent.ActiveSpeakersChanged, () => refreshAgent(r))
    .on(RoomEvent.TrackSubscribed, (track) => {
      if (track.kind === Track.Kind.Audio) {
        const el = track.attach();
        el.dataset.testid = 'agent-audio';
        document.body.append(el);
      }
    })
    .on(RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.remove()))
    .on(RoomEvent.Disconnected, () => {
      if (r !== room || leaving) return;
      // The server ended it (join timeout, max duration, the worker left): say so.
      room = null;
      addLine('system', '·', 'the connection ended');
      setAgentState('not in the room');
      setState('disconnected');
      describeSession();
    });
}

async function describeSession() {
  if (!current) return;
  try {
    const s = await api('GET', `/api/sessions/${current.session}`);
    const reason = s.connection?.endReason ? `, ended: ${s.connection.endReason}` : '';
    ui.info.textContent = `${s.session} · connection ${s.connection?.id ?? '–'} · ${s.phase}${reason}`;
  } catch (err) {
    showError(err.message);
  }
}

async function connect() {
  showError('');
  setState('connecting', 'starting a fresh agent…');
  let answer;
  try {
    answer = await api('POST', '/api/sessions', { agentId: ui.agent.value });
  } catch (err) {
    setState(current ? 'disconnected' : 'idle');
    showError(`${err.message}${err.status ? ` (HTTP ${err.status})` : ''}`);
    return;
  }
  current = answer;
  ui.info.textContent = `${answer.session} · connection ${answer.connection} · room ${answer.room}`;
  const r = new Room({ adaptiveStream: false, dynacast: false });
  room = r;
  wireRoom(r);
  setState('joining', 'joining the room…');
  try {
    await r.connect(answer.livekitUrl, answer.token);
  } catch (err) {
    room = null;
    setState('failed', 'could not join the room');
    showError(err.message);
    return;
  }
  addLine('system', '·', `connection ${answer.connection} started`);
  refreshAgent(r);
  await r.startAudio().catch(() => {});
  try {
    await r.localParticipant.setMicrophoneEnabled(true);
    ui.mic.setAttribute('aria-pressed', 'true');
    ui.mic.textContent = 'Mic on';
  } catch (err) {
    showError(`microphone unavailable (${err.message}); you can still type`);
  }
}

async function disconnect() {
  if (!current) return;
  const r = room;
  leaving = true;
  room = null;
  setState('disconnecting', 'disconnecting…');
  try {
    if (r) await r.disconnect();
    const ended = await api('DELETE', `/api/sessions/${current.session}/connection`);
    addLine('system', '·', `connection ${ended.connection} ended (${ended.endReason || ended.phase})`);
    setState('disconnected');
    await describeSession();
  } catch (err) {
    setState('disconnected');
    showError(`disconnect: ${err.message}`);
  } finally {
    leaving = false;
    setAgentState('not in the room');
    ui.mic.setAttribute('aria-pressed', 'false');
    ui.mic.textContent = 'Mic off';
  }
}

async function toggleMic() {
  if (!room) return;
  const on = !room.localParticipant.isMicrophoneEnabled;
  try {
    await room.localParticipant.setMicrophoneEnabled(on);
    ui.mic.setAttribute('aria-pressed', String(on));
    ui.mic.textContent = on ? 'Mic on' : 'Mic off';
  } catch (err) {
    showError(`microphone: ${err.message}`);
  }
}

async function sendChat(event) {
  event.preventDefault();
  const text = ui.chat.value.trim();
  if (!text || !room) return;
  ui.chat.value = '';
  addLine('user typed', 'you', text);
  try {
    await room.localParticipant.sendText(text, { topic: CHAT_TOPIC });
  } catch (err) {
    showError(`could not send: ${err.message}`);
  }
}

async function loadAgents() {
  const agents = await api('GET', '/api/agents');
  ui.agent.replaceChildren(...agents.map((a) => {
    const option = new Option(a.name, a.id);
    option.dataset.name = a.name;
    return option;
  }));
  if (!agents.length) showError('no agents available');
}

async function start() {
  ui.login.hidden = true;
  ui.app.hidden = false;
  try {
    await loadAgents();
    setState('idle');
  } catch (err) {
    if (err.status !== 401) {
      showError(`could not list agents: ${err.message}`);
      setState('failed', 'gateway unavailable');
    }
  }
}

ui.loginForm.addEventListener('submit', (event) => {
  event.preventDefault();
  bearer = ui.tokenInput.value.trim();
  sessionStorage.setItem(TOKEN_KEY, bearer);
  ui.tokenInput.value = '';
  start();
});
ui.connect.addEventListener('click', connect);
ui.disconnect.addEventListener('click', disconnect);
ui.mic.addEventListener('click', toggleMic);
ui.chatForm.addEventListener('submit', sendChat);
ui.agent.addEventListener('change', () => setState(document.body.dataset.state));
window.addEventListener('pagehide', () => room?.disconnect());

bearer = tokenFromFragment();
if (bearer) start(); else showLogin('');
