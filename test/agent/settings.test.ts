/**
 * Where the agent's server and MAC come from: flags, else an (injected) kernel command line,
 * else upstream's default server; and the bare-host normalisation of `--server`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isBtyError } from '../../src/core/errors.ts';
import { normaliseServer, parseCmdline, resolveAgentSettings } from '../../src/agent/settings.ts';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-agent-settings-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function cmdline(text: string): Promise<string> {
  const path = join(dir, `cmdline-${Math.random().toString(36).slice(2)}`);
  await writeFile(path, text);
  return path;
}

describe('normaliseServer', () => {
  it.each([
    ['bty-server', 'http://bty-server'],
    ['10.0.0.5:8080', 'http://10.0.0.5:8080'],
    ['10.0.0.5:8080/', 'http://10.0.0.5:8080'],
    ['  lab.example//  ', 'http://lab.example'],
    ['https://lab.example/', 'https://lab.example'],
    ['http://Lab.Example:81/sub/', 'http://Lab.Example:81/sub'],
  ])('%j -> %j', (raw, url) => {
    expect(normaliseServer(raw)).toBe(url);
  });
});

describe('parseCmdline', () => {
  it('reads bty.server= and bty.mac=, ignoring everything else', () => {
    expect(
      parseCmdline(
        'BOOT_IMAGE=/vmlinuz boot=live bty.server=10.0.0.5:8080 quiet bty.mac=52:54:00:aa:bb:cc\n',
      ),
    ).toEqual({ server: '10.0.0.5:8080', mac: '52:54:00:aa:bb:cc' });
  });

  it('takes the last occurrence, drops quotes, skips empty values', () => {
    expect(parseCmdline('bty.mac=aa bty.mac="52-54-00-AA-BB-CC" bty.server= x=y')).toEqual({
      mac: '52-54-00-AA-BB-CC',
    });
    expect(parseCmdline('')).toEqual({});
  });
});

describe('resolveAgentSettings', () => {
  it('defaults both values from the cmdline file when no flags are given', async () => {
    const path = await cmdline('quiet bty.server=lab-host:8080/ bty.mac=52-54-00-AA-BB-CC\n');
    expect(await resolveAgentSettings({}, path)).toEqual({
      server: 'http://lab-host:8080',
      mac: '52:54:00:aa:bb:cc',
    });
  });

  it('lets the flags win over the cmdline, each on its own', async () => {
    const path = await cmdline('bty.server=from-cmdline bty.mac=52:54:00:00:00:01');
    expect(await resolveAgentSettings({ server: 'https://flag.example/' }, path)).toEqual({
      server: 'https://flag.example',
      mac: '52:54:00:00:00:01',
    });
    expect(await resolveAgentSettings({ mac: '52:54:00:00:00:02' }, path)).toEqual({
      server: 'http://from-cmdline',
      mac: '52:54:00:00:00:02',
    });
  });

  it('falls back to upstream default server bty-server', async () => {
    const path = await cmdline('bty.mac=52:54:00:00:00:03');
    expect(await resolveAgentSettings({}, path)).toEqual({
      server: 'http://bty-server',
      mac: '52:54:00:00:00:03',
    });
  });

  it('is null without a MAC anywhere (plain `bty`), also with a missing cmdline file', async () => {
    expect(await resolveAgentSettings({}, await cmdline('quiet bty.server=x'))).toBeNull();
    expect(await resolveAgentSettings({ server: 'x' }, join(dir, 'absent'))).toBeNull();
    expect(await resolveAgentSettings({ mac: '  ' }, join(dir, 'absent'))).toBeNull();
  });

  it('refuses a malformed MAC with BTY_ERR_BAD_INPUT (exit 2)', async () => {
    const err = await resolveAgentSettings({ mac: 'aabbccddeeff' }, join(dir, 'absent')).catch(
      (e: unknown) => e,
    );
    expect(isBtyError(err, 'BTY_ERR_BAD_INPUT')).toBe(true);
    expect((err as Error).message).toBe("invalid MAC: 'aabbccddeeff'");
  });
});
