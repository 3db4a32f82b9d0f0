/**
 * The agent on the `bty` command line, in process: the root options, the kernel command line as
 * the source of the MAC and server (an injected file), and the plain CLI left as it was.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerAgent, type AgentCliOverrides } from '../../src/agent/cli.ts';
import type { ExitCode } from '../../src/core/errors.ts';
import { capture, runBty } from '../helpers/cli.ts';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-agent-cli-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** A bare program with only the agent registered, reading the given cmdline file. */
async function runRoot(
  argv: string[],
  cmdlinePath: string,
  wizard?: { startWizard: () => boolean; runWizard: AgentCliOverrides['runWizard'] },
): Promise<{ code: ExitCode | 'help'; stdout: string; stderr: string }> {
  const io = capture();
  let code: ExitCode = 0;
  const program = new Command('bty')
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err });
  // Never the host's console, kernel log or lock; no waits between plan attempts.
  const overrides: AgentCliOverrides = {
    consolePath: null,
    kmsgPath: null,
    lockPath: join(dir, 'agent.lock'),
    planRetryDelaysMs: [],
    ...(wizard?.runWizard ? { runWizard: wizard.runWizard } : {}),
  };
  registerAgent(cmdlinePath, wizard?.startWizard, overrides)(program, io, (c) => (code = c));
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError && err.code === 'commander.help') {
      return { code: 'help', stdout: io.stdout(), stderr: io.stderr() };
    }
    throw err;
  }
  return { code, stdout: io.stdout(), stderr: io.stderr() };
}

describe('bty with the agent options', () => {
  it('runs the agent from bty.server= and bty.mac= in the kernel command line', async () => {
    const port = await closedPort();
    const cmdline = join(dir, 'cmdline-agent');
    await writeFile(cmdline, `quiet bty.server=127.0.0.1:${port}/ bty.mac=52-54-00-AB-CD-EF\n`);
    const r = await runRoot([], cmdline);
    // The server is not there: the wizard hand-over with the server's catalog.
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      `server-driven mode: server=http://127.0.0.1:${port} mac=52:54:00:ab:cd:ef\n`,
    );
    expect(r.stdout).toContain(`catalog http://127.0.0.1:${port}/catalog.toml\n`);
  });

  it('shows the help when no MAC is known, and refuses stray operands', async () => {
    const cmdline = join(dir, 'cmdline-plain');
    await writeFile(cmdline, 'quiet splash\n');
    expect((await runRoot([], cmdline)).code).toBe('help');
    await expect(runRoot(['bogus'], cmdline)).rejects.toMatchObject({
      code: 'commander.unknownCommand',
    });
  });

  it('without a MAC on a terminal: the wizard, with --catalog and --no-reboot passed on', async () => {
    const cmdline = join(dir, 'cmdline-wizard');
    await writeFile(cmdline, 'quiet splash\n');
    const calls: Array<{ catalog: string | null; noReboot: boolean }> = [];
    const wizard = {
      startWizard: () => true,
      runWizard: (options: { catalog: string | null; noReboot: boolean }) => {
        calls.push(options);
        return Promise.resolve(0 as ExitCode);
      },
    };
    expect((await runRoot(['--no-reboot', '--catalog', '/c.toml'], cmdline, wizard)).code).toBe(0);
    expect((await runRoot([], cmdline, wizard)).code).toBe(0);
    expect(calls).toEqual([
      { catalog: '/c.toml', noReboot: true },
      { catalog: null, noReboot: false },
    ]);
  });

  it('refuses a malformed --mac with exit 2', async () => {
    const r = await runBty('--mac', 'not-a-mac', '--no-reboot');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("invalid MAC: 'not-a-mac'");
  });
});

// These go through main() and so read the real /proc/cmdline: a host booted with bty.mac=
// would run the agent instead.
const hostHasBtyMac = /(^|\s)bty\.mac=/.test(
  (() => {
    try {
      return readFileSync('/proc/cmdline', 'utf8');
    } catch {
      return '';
    }
  })(),
);

describe.skipIf(hostHasBtyMac)('the plain CLI is unchanged', () => {
  it('bty alone prints the usage and exits 0', async () => {
    const r = await runBty();
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('Usage: bty [options] [command]');
    expect(r.stderr).toContain('--no-reboot');
  });

  it('unknown commands, help, --version', async () => {
    const bogus = await runBty('bogus');
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toContain("error: unknown command 'bogus'");
    const help = await runBty('help', 'flash');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('Usage: bty flash [options] <source> <target>');
    const version = await runBty('--version');
    expect(version.code).toBe(0);
    expect(version.stdout).toMatch(/^bty \d+\.\d+\.\d+/);
  });
});
