/**
 * The agent's dispatch in process, against a stand-in server that answers chosen plans: the
 * wizard hand-over (observed through the injected fallback) for every case that leads there,
 * and the injected reboot for the modes that reboot. No disk is written here.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent, type AgentOptions } from '../../src/agent/agent.ts';
import type { WizardFallbackRequest } from '../../src/agent/wizard-fallback.ts';

const MAC = '52:54:00:0f:10:11';
let server: http.Server;
let base: string;
/** What GET /pxe/{mac}/plan answers next: [status, body]. */
let planAnswer: [number, string] = [200, '{"mode":"exit"}'];
const posts: Array<{ path: string; body: unknown }> = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (text += d));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === `/pxe/${MAC}/plan`) {
        res.writeHead(planAnswer[0], { 'content-type': 'application/json' });
        return res.end(planAnswer[1]);
      }
      if (req.method === 'POST') {
        posts.push({ path: req.url ?? '', body: JSON.parse(text) as unknown });
        res.writeHead(204);
        return res.end();
      }
      res.writeHead(404);
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});

async function agent(plan: [number, string], { noReboot = false } = {}) {
  planAnswer = plan;
  posts.length = 0;
  let out = '';
  const handedOver: Array<Omit<WizardFallbackRequest, 'out'>> = [];
  let reboots = 0;
  const options: AgentOptions = {
    server: base,
    mac: MAC,
    reboot: noReboot
      ? null
      : () => {
          reboots++;
          return Promise.resolve();
        },
    out: (t) => (out += t),
    err: (t) => (out += t),
    consolePath: null,
    loopIdentity: false,
    lshwProgram: '/nonexistent/lshw',
    // The retries have their own tests (agent-flash.test.ts): hand over at the first failure.
    planRetryDelaysMs: [],
    wizard: ({ catalog, banner, noReboot: wizardNoReboot }) => {
      handedOver.push({ catalog, banner, noReboot: wizardNoReboot });
      return Promise.resolve(1);
    },
  };
  const code = await runAgent(options);
  return { code, out, handedOver, reboots };
}

describe('runAgent dispatch', () => {
  it('interactive: the wizard with the plan catalog, no banner', async () => {
    const r = await agent([200, '{"mode":"interactive","catalog":"http://other/catalog.toml"}']);
    expect(r.handedOver).toEqual([
      { catalog: 'http://other/catalog.toml', banner: null, noReboot: false },
    ]);
    expect(r.code).toBe(1);
    expect(r.reboots).toBe(0);
  });

  it('--no-reboot travels to the wizard (its reboot key must not reboot either)', async () => {
    const r = await agent([200, '{"mode":"interactive"}'], { noReboot: true });
    expect(r.handedOver).toEqual([
      { catalog: `${base}/catalog.toml`, banner: null, noReboot: true },
    ]);
  });

  it.each([
    [[200, '{"mode":"auto"}'], /^unknown plan mode 'auto'; falling back to interactive$/],
    [[500, 'boom'], /^plan fetch failed: HTTP 500: boom$/],
    [[200, '<html>'], /^plan fetch failed: the answer is not JSON: <html>$/],
    [[200, '[1]'], /^plan fetch failed: the plan is not a JSON object: \[1\]$/],
    [
      [200, '{"mode":"flash","image":"http://h/x.img"}'],
      /^server returned mode=flash but missing image\/target_disk_serial: /,
    ],
  ] as Array<[[number, string], RegExp]>)(
    '%j: the wizard with <server>/catalog.toml',
    async (plan, banner) => {
      const r = await agent(plan);
      expect(r.handedOver).toHaveLength(1);
      expect(r.handedOver[0]!.catalog).toBe(`${base}/catalog.toml`);
      expect(r.handedOver[0]!.banner).toMatch(banner);
      expect(r.out).not.toContain('bty: auto-flash starting');
    },
  );

  it('inventory: posts the disks first, then reboots once, exit 0', async () => {
    const r = await agent([200, '{"mode":"inventory"}']);
    expect(r.code).toBe(0);
    expect(r.reboots).toBe(1);
    expect(r.handedOver).toEqual([]);
    expect(posts.map((p) => p.path)).toEqual([`/pxe/${MAC}/inventory`]);
    const body = posts[0]!.body as { disks: Array<Record<string, unknown>>; lshw?: unknown };
    expect(body).not.toHaveProperty('lshw');
    for (const disk of body.disks) {
      expect(Object.keys(disk).sort()).toEqual(
        [
          'model',
          'mountpoints',
          'path',
          'readonly',
          'removable',
          'serial',
          'size',
          'tran',
          'type',
          'vendor',
        ].sort(),
      );
      // Without the opt-in, loop devices are neither reported nor targets.
      expect(disk.type).toBe('disk');
    }
  });

  it('exit: no reboot, exit 0', async () => {
    const r = await agent([200, '{"mode":"exit"}']);
    expect(r.code).toBe(0);
    expect(r.reboots).toBe(0);
    expect(r.out).toContain('nothing to do');
  });
});
