/**
 * The wizard end to end, the way an operator drives it: the built `bin/bty` in a detached 80x25
 * tmux session (send-keys in, capture-pane out), flashing onto a real loop device (listed under
 * the BTY_AGENT_LOOP_IDENTITY opt-in), from a local image root and from a running bty-web's
 * catalog. Needs root for the loop devices and `make build` for dist/.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startFaultServer, type FaultServer } from '../helpers/fault-server.ts';
import { convertImage, makeRawImage, sha256File, type MadeImage } from '../helpers/images.ts';
import { createLoopDevice, describeIfRoot, type LoopDevice } from '../helpers/loop.ts';
import { startUiServer, UI_PASSWORD, type UiServer } from '../helpers/ui.ts';

const run = promisify(execFile);
const BTY = new URL('../../bin/bty', import.meta.url).pathname;
const MiB = 1 << 20;
/** A private tmux server: killing it can only ever touch this file's sessions. */
const SOCKET = `bty-wizard-${process.pid}`;
const SCREEN_TIMEOUT_MS = 60_000;

let dir: string;
let imageRoot: string;
let raw: MadeImage;
let zst: MadeImage;
let images: FaultServer | undefined;
let web: UiServer | undefined;
const loops: LoopDevice[] = [];
/** Pane process ids, killed in afterAll whatever state the tests left. */
const panePids: number[] = [];

function tmux(...args: string[]): Promise<string> {
  return run('tmux', ['-L', SOCKET, ...args]).then((r) => r.stdout);
}

/**
 * Starts `bin/bty ARGS` in a fresh 80x25 session; the shell prints the exit code and waits.
 * `pidFile`: where bty's own process id is written (it is exec'd by a subshell that wrote it).
 */
async function startWizard(
  session: string,
  args: string[],
  env: Record<string, string>,
  pidFile?: string,
) {
  // CI=true as CI machines set it: Ink must still draw (run.tsx forces interactive mode).
  const vars = Object.entries({ CI: 'true', ...env }).map(([k, v]) => `${k}='${v}'`);
  const exec = `env ${vars.join(' ')} ${BTY} ${args.join(' ')}`;
  const bty = pidFile ? `sh -c 'echo $$ > ${pidFile}; exec ${exec}'` : exec;
  const command = `${bty}; echo "bty-exit=$?"; sleep 600`;
  await tmux('new-session', '-d', '-x', '80', '-y', '25', '-s', session, command);
  panePids.push(Number((await tmux('display-message', '-p', '-t', session, '#{pane_pid}')).trim()));
}

async function screen(session: string): Promise<string> {
  return tmux('capture-pane', '-p', '-t', session);
}

/** Waits (bounded) until the pane shows `text`; returns the screen. */
async function until(session: string, text: string | RegExp): Promise<string> {
  const deadline = Date.now() + SCREEN_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    last = await screen(session);
    if (typeof text === 'string' ? last.includes(text) : text.test(last)) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the wizard never showed ${String(text)}; screen:\n${last}`);
}

async function keys(session: string, ...names: string[]): Promise<void> {
  for (const name of names) {
    await tmux('send-keys', '-t', session, name);
    // Room for Ink to read each key alone (a lone Esc is told from an escape sequence by time).
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** Picks a loop device on the disk screen by its row number, scrolling down to find it. */
async function pickDisk(session: string, path: string): Promise<void> {
  const row = new RegExp(`^[> ]?(\\d+)\\s+${path}\\s`, 'm');
  await until(session, '/dev/');
  for (let i = 0; i < 100; i++) {
    const found = row.exec(await screen(session));
    if (found) return keys(session, ...found[1]!.split(''), 'Enter');
    await keys(session, 'Down');
  }
  throw new Error(`${path} is not on the disk screen:\n${await screen(session)}`);
}

/** bty-web with two catalog entries: the image at full speed, and throttled (to cancel it). */
async function startCatalog(): Promise<string> {
  if (web) return `${web.base}/catalog.toml`;
  images = await startFaultServer();
  images.serve('/images/served.img.zst', { body: { file: zst.path } });
  images.serve(
    '/images/slow.img.zst',
    { body: { file: zst.path } },
    { bytesPerSecond: 256 * 1024 },
  );
  web = await startUiServer();
  const login = await fetch(`${web.base}/ui/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ password: UI_PASSWORD }),
  });
  expect(login.status).toBe(204);
  const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
  for (const path of ['/images/served.img.zst', '/images/slow.img.zst']) {
    const entry = await fetch(`${web.base}/catalog/entries`, {
      method: 'POST',
      headers: { cookie, accept: 'application/json', 'content-type': 'application/json' },
      body: JSON.stringify({ src: images.urlFor(path), sha256: zst.sha256 }),
    });
    expect(entry.status, await entry.clone().text()).toBe(201);
  }
  return `${web.base}/catalog.toml`;
}

/** Picks a row of the image list by name. */
async function pickRow(session: string, name: string): Promise<void> {
  const shown = await until(session, name);
  const row = new RegExp(`^[> ]?(\\d+)\\s+${name.replace(/\./g, '\\.')}\\s`, 'm').exec(shown);
  expect(row, shown).not.toBeNull();
  await keys(session, ...row![1]!.split(''), 'Enter');
}

async function newLoop(): Promise<LoopDevice> {
  const loop = await createLoopDevice({
    sizeBytes: 24 * MiB,
    fileName: `wizard-${randomUUID().slice(0, 8)}.img`,
  });
  loops.push(loop);
  return loop;
}

describeIfRoot('the wizard in a terminal', () => {
  beforeAll(async () => {
    if (!existsSync(new URL('../../dist/src/tui/run.js', import.meta.url))) {
      throw new Error('dist/ is missing the wizard: run `make build` before these tests');
    }
    dir = await mkdtemp(join(tmpdir(), 'bty-wizard-'));
    imageRoot = join(dir, 'images');
    await mkdir(imageRoot);
    await mkdir(join(dir, 'empty'));
    raw = await makeRawImage(join(dir, 'disk.img'), { sizeBytes: 16 * MiB, seed: 77 });
    zst = await convertImage(raw.path, 'img.zst', join(imageRoot, 'wizard-e2e.img.zst'));
    // The sidecar makes the local flash checked on the wire too.
    await writeFile(`${zst.path}.sha256`, `${zst.sha256}  wizard-e2e.img.zst\n`);
  });

  afterAll(async () => {
    await run('tmux', ['-L', SOCKET, 'kill-server']).catch(() => undefined);
    // tmux leaves its socket file behind.
    const uid = process.getuid?.() ?? 0;
    await rm(join(process.env.TMUX_TMPDIR ?? '/tmp', `tmux-${uid}`, SOCKET), { force: true });
    for (const pid of panePids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone with its session
      }
    }
    for (const loop of loops) await loop.detach();
    await web?.close();
    await images?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('flashes a local image onto a loop device, with Esc going back at each step', async () => {
    const loop = await newLoop();
    const session = 'local';
    await startWizard(session, [], {
      BTY_IMAGE_ROOT: imageRoot,
      BTY_AGENT_LOOP_IDENTITY: '1',
      TERM: 'xterm-256color',
      LANG: 'C.UTF-8',
    });
    // Local images exist: the source screen is skipped.
    await until(session, 'wizard-e2e.img.zst');
    expect(await screen(session)).toContain('[2.Image]');

    await keys(session, 'Enter');
    await until(session, '[3.Disk]');
    await keys(session, 'Escape');
    await until(session, '[2.Image]');
    await keys(session, 'Enter');
    await pickDisk(session, loop.path);
    await until(session, 'Flash plan');
    await keys(session, 'Escape');
    await until(session, '[3.Disk]');
    await pickDisk(session, loop.path);
    await until(session, 'Press y to flash');
    // Read-back on, then the plan is checked again.
    await keys(session, 'v');
    const plan = await until(session, 'yes: compared after writing');
    expect(plan).toContain('checked while writing');
    expect(plan).toContain(`loop-${loop.backingFile.split('/').pop()}`);
    await keys(session, 'y');
    const done = await until(session, 'Flash completed');
    expect(done).toContain('sha256:    verified while writing');
    expect(done).toContain('read-back: verified');
    await keys(session, 'q');
    // Back on the shell's screen, the outcome stays in the scrollback.
    expect(await until(session, 'bty-exit=0')).toContain(
      `bty: flashed wizard-e2e.img.zst -> ${loop.path} (sha256 verified, read back)`,
    );

    expect(await sha256File(loop.path, { length: raw.sizeBytes })).toBe(raw.sha256);
  });

  it("flashes a running bty-web's catalog entry, the URL given with --catalog", async () => {
    const catalogUrl = await startCatalog();

    const loop = await newLoop();
    const session = 'catalog';
    const emptyRoot = join(dir, 'empty');
    await startWizard(session, ['--catalog', catalogUrl], {
      BTY_IMAGE_ROOT: emptyRoot,
      BTY_AGENT_LOOP_IDENTITY: '1',
      TERM: 'linux',
      LANG: 'C',
    });
    const list = await until(session, 'served.img.zst');
    // TERM=linux: the ASCII frame.
    expect(list).toContain('+----');
    expect(list).toMatch(/served\.img\.zst.*catalog/);
    await pickRow(session, 'served.img.zst');
    await pickDisk(session, loop.path);
    await until(session, 'Press y to flash');
    await keys(session, 'y');
    const done = await until(session, 'Flash completed');
    expect(done).toContain('verified while writing');
    await keys(session, 'q');
    await until(session, 'bty-exit=0');

    expect(await sha256File(loop.path, { length: raw.sizeBytes })).toBe(raw.sha256);
  });

  it('a custom source typed on the source screen keeps its case (and Esc brings it back)', async () => {
    await startCatalog();
    // Served only at this mixed-case path: a lower-cased URL would get a 404.
    const path = '/Fleet/Lab-A/Catalog.TOML';
    images!.serve(path, {
      body: Buffer.from(
        `version = 1\n\n[[images]]\nname = "Typed-Catalog-Image"\n` +
          `src = "${images!.urlFor('/images/served.img.zst')}"\nsha256 = "${zst.sha256}"\n`,
      ),
    });
    const typed = images!.urlFor(path);
    const session = 'typed';
    await startWizard(session, [], {
      BTY_IMAGE_ROOT: join(dir, 'empty'),
      TERM: 'xterm-256color',
      LANG: 'C.UTF-8',
    });
    await until(session, '[c]');
    await keys(session, 'c');
    await tmux('send-keys', '-t', session, '-l', typed);
    await new Promise((r) => setTimeout(r, 150));
    await keys(session, 'Enter');
    const list = await until(session, 'Typed-Catalog-Image');
    expect(list).toContain('Typed-Catalog-Image');
    // Back to the source screen: the typed source is still there, case and all.
    await keys(session, 'Escape');
    await until(session, '[c]');
    await keys(session, 'c');
    const again = await until(session, 'Lab-A');
    expect(again).toContain('/Fleet/Lab-A/Catalog.TOML');
    await keys(session, 'Escape', 'Escape', 'q');
    await until(session, 'bty-exit=0');
  });

  it('takes over from the agent when the server cannot be reached, with its catalog', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    await new Promise<void>((r) => server.close(() => r()));
    const session = 'agent';
    await startWizard(session, ['--server', `127.0.0.1:${port}`, '--mac', '52:54:00:aa:bb:cc'], {
      BTY_IMAGE_ROOT: imageRoot,
      BTY_AGENT_CONSOLE: '',
      TERM: 'xterm-256color',
      LANG: 'C.UTF-8',
    });
    const shown = await until(session, 'catalog load failed');
    expect(shown).toContain(`catalog: http://127.0.0.1:${port}/catalog.toml`);
    // The agent's reason and the catalog failure both stay visible; local images are offered.
    expect(shown).toMatch(/plan fetch failed: .*ECONNREFUSED/);
    // The screen starts at the top even though the agent printed lines before it.
    expect(shown.split('\n')[0]).toMatch(/^[┌+]/);
    expect(shown).toContain('wizard-e2e.img.zst');
    await keys(session, 'q');
    await until(session, 'bty-exit=0');
  });

  it('Ctrl-C during a flash asks first, then cancels and says the disk must be flashed again', async () => {
    const catalogUrl = await startCatalog();
    const loop = await newLoop();
    const session = 'cancel';
    await startWizard(session, ['--catalog', catalogUrl], {
      BTY_IMAGE_ROOT: join(dir, 'empty'),
      BTY_AGENT_LOOP_IDENTITY: '1',
      TERM: 'xterm-256color',
      LANG: 'C.UTF-8',
    });
    await pickRow(session, 'slow.img.zst');
    await pickDisk(session, loop.path);
    await until(session, 'Press y to flash');
    await keys(session, 'y');
    await until(session, /writing.*\n.*\d+%/);
    await keys(session, 'C-c');
    await until(session, 'Cancel the flash?');
    await keys(session, 'n');
    await until(session, /^(?![\s\S]*Cancel the flash\?)[\s\S]*\[5\.Flash\]/);
    await keys(session, 'C-c', 'y');
    const result = await until(session, 'Flash cancelled.');
    expect(result).toContain('partial data');
    await keys(session, 'q');
    expect(await until(session, 'bty-exit=0')).toContain('bty: flash cancelled');
  });

  it('SIGTERM during a flash cancels it at once (no question) and exits 130', async () => {
    const catalogUrl = await startCatalog();
    const loop = await newLoop();
    const session = 'sigterm';
    const pidFile = join(dir, 'sigterm.pid');
    await startWizard(
      session,
      ['--catalog', catalogUrl],
      {
        BTY_IMAGE_ROOT: join(dir, 'empty'),
        BTY_AGENT_LOOP_IDENTITY: '1',
        TERM: 'xterm-256color',
        LANG: 'C.UTF-8',
      },
      pidFile,
    );
    await pickRow(session, 'slow.img.zst');
    await pickDisk(session, loop.path);
    await until(session, 'Press y to flash');
    await keys(session, 'y');
    await until(session, /writing.*\n.*\d+%/);
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    process.kill(pid, 'SIGTERM');
    const shell = await until(session, /bty-exit=\d+/);
    expect(shell).not.toContain('Cancel the flash?');
    expect(shell).toContain('bty: flash cancelled');
    expect(shell).toContain('bty-exit=130');
  });
});
