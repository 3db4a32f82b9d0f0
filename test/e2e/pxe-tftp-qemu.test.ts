/**
 * Legacy PXE for real (issue 7): a QEMU guest (TCG, SeaBIOS) on a tap device in a private
 * network namespace boots over the network the way a BIOS machine on an operator's LAN does:
 *
 *   firmware DHCP (dnsmasq) -> undionly.kpxe over TFTP (bin/bty-tftp, from Debian's ipxe
 *   package) -> the chained iPXE DHCPs again -> http://<bty-web>/pxe-bootstrap.ipxe ->
 *   /pxe/<mac> -> the machine is discovered.
 *
 * dnsmasq is DHCP only (`--port=0`, no `enable-tftp`), configured with the operator cheatsheet's
 * own dnsmasq snippet (src/web/ui/cheatsheet.ts) but for one substitution, explained here.
 *
 * The guest's PXE firmware is QEMU's NIC option ROM (package ipxe-qemu), which is itself iPXE,
 * built from the same source and version as Debian's undionly.kpxe. The cheatsheet tells iPXE
 * from the firmware by "option 175 present / user class iPXE", which the ROM matches too: it
 * would be handed the bootstrap URL at once and TFTP would never be used (the boot still works,
 * which is why operators need no change). Captured on the bridge, the ROM's DHCP requests and
 * those of the undionly.kpxe it chains are byte-identical apart from the transaction id (same
 * user class, vendor class, option 175 contents, bus id 175.177 and version), so no match on
 * request contents can tell them apart.
 *
 * What differs is what each one was told before: an iPXE loaded as a PXE boot file takes over
 * the DHCPACK its loader received (iPXE's "cached DHCP"), and iPXE sends its `user-class`
 * setting (default "iPXE") as option 77 in its DHCP requests. So the answer to any request not
 * yet recognised as chained carries option 77 = CHAINED_USER_CLASS along with undionly.kpxe;
 * the ROM has finished its DHCP when it gets it, and the chained undionly.kpxe starts with that
 * DHCPACK as settings and asks with user class CHAINED_USER_CLASS, which is the tag that gets
 * the bootstrap URL. This is the same mechanism with any PXE firmware (a vendor PXE ROM ignores
 * option 77), and the dnsmasq log proves it took: the first exchange (user class iPXE) was
 * answered with undionly.kpxe, the later one (user class CHAINED_USER_CLASS) with the URL.
 *
 * bty-web runs in the namespace too; the test reads its SQLite file (machine, events) and its
 * `/metrics` (through curl in the namespace) for the requests it answered.
 */
import { randomBytes } from 'node:crypto';
import { access, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type BtyDatabase } from '../../src/web/db/database.ts';
import { listEvents } from '../../src/web/db/events.ts';
import { getMachine } from '../../src/web/db/machines.ts';
import { dnsmasqSnippet } from '../../src/web/ui/cheatsheet.ts';
import {
  createPxeLab,
  dhcpExchanges,
  pxeQemuArgs,
  UNDIONLY_KPXE,
  type LabProcess,
  type PxeLab,
} from '../helpers/pxe-lab.ts';
import { checkQemu, QEMU_BINARY, stripEscapes } from '../helpers/qemu.ts';

const WEB_BIN = new URL('../../bin/bty-web', import.meta.url).pathname;
const TFTP_BIN = new URL('../../bin/bty-tftp', import.meta.url).pathname;
/** The folder Debian's ipxe package installs, served as is (as the cheatsheet suggests). */
const TFTP_ROOT = '/usr/lib/ipxe';
/** Inside the namespace every port is free: the standard ones, as on a real network. */
const WEB_PORT = 8080;
const TFTP_PORT = 69;
/** A MAC per run (QEMU's OUI): nothing in the records can come from another run. */
const MAC = `52:54:00:${randomBytes(3).toString('hex').match(/../g)!.join(':')}`;
const MAC_HEXHYP = MAC.replaceAll(':', '-');
/** What dnsmasq tells the firmware to make the iPXE it loads say (see the header). */
const CHAINED_USER_CLASS = 'bty-chained';
/** A TCG boot through the firmware, TFTP and two DHCPs takes tens of seconds. */
const BOOT_TIMEOUT_MS = 90_000;

let dir = '';
let lab: PxeLab | null = null;
let database: BtyDatabase | null = null;
let web: LabProcess | null = null;
let tftp: LabProcess | null = null;
let dhcp: Awaited<ReturnType<PxeLab['startDnsmasq']>> | null = null;

/**
 * The cheatsheet's dnsmasq snippet with its two "is this iPXE?" rules replaced by the
 * alternative it offers for virtual machines (commented out there): the chained-iPXE marker (see
 * the header). Throws if the snippet no longer has either, so a cheatsheet change cannot
 * silently change what this test runs, and the operator's note is what this boot proves.
 */
function labDnsmasqConfig(address: string): string {
  const snippet = dnsmasqSnippet({ host: address, port: WEB_PORT, tftpHost: address });
  const replaced = new Map([
    ['dhcp-match=set:ipxe,175', `dhcp-userclass=set:ipxe,${CHAINED_USER_CLASS}`],
    [
      'dhcp-userclass=set:ipxe,iPXE',
      `dhcp-option-force=tag:bios,tag:!ipxe,77,${CHAINED_USER_CLASS}`,
    ],
  ]);
  const lines = snippet.split('\n');
  for (const [rule, replacement] of replaced) {
    const at = lines.indexOf(rule);
    const offered = lines.indexOf(`#${replacement}`);
    if (at < 0 || offered < 0) {
      throw new Error(
        `the cheatsheet's dnsmasq snippet no longer has "${rule}" and "#${replacement}":\n${snippet}`,
      );
    }
    lines[at] = replacement;
  }
  const config = lines.join('\n');
  for (const expected of [
    `dhcp-boot=tag:bios,tag:!ipxe,undionly.kpxe,,${address}`,
    `dhcp-boot=tag:ipxe,http://${address}:${WEB_PORT}/pxe-bootstrap.ipxe`,
  ]) {
    if (!lines.includes(expected)) {
      throw new Error(`the cheatsheet's dnsmasq snippet no longer has "${expected}":\n${snippet}`);
    }
  }
  return config;
}

/** bin/* launchers need `make build` (dist/); say so instead of timing out. */
async function checkBuilt(): Promise<void> {
  for (const entry of ['../../dist/src/web/bin.js', '../../dist/src/tftp/bin.js']) {
    const path = new URL(entry, import.meta.url).pathname;
    try {
      await access(path);
    } catch {
      throw new Error(
        `${path} is missing: run \`make build\` (bin/bty-web and bin/bty-tftp run it)`,
      );
    }
  }
}

function db(): BtyDatabase {
  if (!database) throw new Error('the database is not open');
  return database;
}

/** Everything a failure needs to be understood: the guest's console and every server's log. */
function report(what: string, serial: string, qemu: LabProcess): string {
  const tail = (text: string, max = 8_000) =>
    text.length > max ? `[...]\n${text.slice(-max)}` : text;
  return [
    what,
    `--- guest serial log ---\n${tail(stripEscapes(serial).replace(/\r/g, ''))}`,
    `--- QEMU (pid ${qemu.pid}, ${qemu.exitStatus() ?? 'stopped by the test'}) ---\n${qemu.output()}`,
    `--- dnsmasq ---\n${tail(dhcp?.log() ?? '(not started)')}`,
    `--- bty-tftp ---\n${tail(tftp?.output() ?? '(not started)')}`,
    `--- bty-web ---\n${tail(web?.output() ?? '(not started)')}`,
  ].join('\n');
}

/** The value of one `bty_web_http_requests_total` series (0 when absent). */
function requestCount(metrics: string, route: string): number {
  let total = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('bty_web_http_requests_total{')) continue;
    if (!line.includes(`route="${route}"`) || !line.includes('method="GET"')) continue;
    if (!line.includes('status="200"')) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-pxe-tftp-qemu-'));
  await checkQemu();
  await checkBuilt();
  lab = await createPxeLab();
  const address = lab.serverAddress;

  tftp = await lab.run('bty-tftp', TFTP_BIN, [
    '--root',
    TFTP_ROOT,
    '--address',
    address,
    '--port',
    String(TFTP_PORT),
  ]);
  await tftp.waitForOutput('"listening on"', (out) => out.includes('listening on'), 20_000);

  const stateDir = join(dir, 'state');
  web = await lab.run('bty-web', WEB_BIN, ['--host', address, '--port', String(WEB_PORT)], {
    env: { ...process.env, BTY_PATHS_STATE_DIR: stateDir, BTY_CONFIG_FILE: '', BTY_CONFIG_DIR: '' },
  });
  await web.waitForOutput('"listening on"', (out) => out.includes('listening on'), 20_000);
  database = await openDatabase({ sqlitePath: join(stateDir, 'state.db') });

  dhcp = await lab.startDnsmasq(dir, labDnsmasqConfig(address));
}, 60_000);

afterAll(async () => {
  // The lab stops QEMU, dnsmasq, bty-web and bty-tftp by PID, then deletes the namespace.
  const errors: unknown[] = [];
  await lab?.close().catch((err: unknown) => errors.push(err));
  await database?.close().catch((err: unknown) => errors.push(err));
  if (dir) await rm(dir, { recursive: true, force: true });
  if (errors.length > 0) throw errors[0];
}, 60_000);

describe('legacy PXE through dnsmasq, bty-tftp and bty-web in a network namespace', () => {
  it(
    'the firmware loads undionly.kpxe over TFTP, the chained iPXE reaches bty-web, the machine is discovered',
    async () => {
      if (!lab || !dhcp || !tftp || !web) throw new Error('the lab did not start');
      const address = lab.serverAddress;
      const serialLog = join(dir, 'guest.serial.log');
      const serial = () => readFile(serialLog, 'latin1').catch(() => '');
      const offerLine = `/pxe/${MAC_HEXHYP}... ok`;

      const started = Date.now();
      const qemu = await lab.run(
        'qemu',
        QEMU_BINARY,
        pxeQemuArgs({ serialLog, tap: lab.tap, mac: MAC }),
      );
      try {
        // Discovered: bty-web stored the machine and iPXE finished reading its answer. QEMU
        // stops right there (the script goes on to the live environment, not served here).
        const deadline = started + BOOT_TIMEOUT_MS;
        for (;;) {
          const text = stripEscapes(await serial());
          if (text.includes(offerLine) && (await getMachine(db().db, MAC))) break;
          if (qemu.exitStatus() !== null) {
            throw new Error(report('QEMU exited before discovery', text, qemu));
          }
          if (Date.now() > deadline) {
            throw new Error(report(`no discovery within ${BOOT_TIMEOUT_MS / 1000} s`, text, qemu));
          }
          await new Promise((r) => setTimeout(r, 250));
        }
        console.log(
          `pxe-tftp-qemu: discovered ${((Date.now() - started) / 1000).toFixed(1)} s after QEMU started`,
        );
      } finally {
        await qemu.stop();
      }
      const text = stripEscapes(await serial()).replace(/\r/g, '');
      const why = report('after discovery', text, qemu);
      const leased = await dhcp.leasedAddress(MAC);
      expect(leased, why).not.toBeNull();

      // DHCP: the firmware (user class iPXE) was sent undionly.kpxe, the iPXE it loaded (user
      // class CHAINED_USER_CLASS) bty-web's bootstrap URL, in that order.
      const exchanges = dhcpExchanges(dhcp.log());
      const acked = (e: (typeof exchanges)[number]) =>
        e.replies.filter((r) => r.type === 'DHCPACK').map((r) => r.bootfile);
      const firmware = exchanges.findIndex(
        (e) => e.userClass === 'iPXE' && acked(e).includes('undionly.kpxe'),
      );
      const chained = exchanges.findIndex(
        (e) =>
          e.userClass === CHAINED_USER_CLASS &&
          acked(e).includes(`http://${address}:${WEB_PORT}/pxe-bootstrap.ipxe`),
      );
      expect(firmware, why).toBeGreaterThanOrEqual(0);
      expect(chained, why).toBeGreaterThan(firmware);

      // TFTP: bty-tftp sent the whole of undionly.kpxe to the guest's leased address.
      const size = (await stat(UNDIONLY_KPXE)).size;
      const transfer = new RegExp(
        `tftp: ${leased!.replaceAll('.', '\\.')}:\\d+ RRQ "undionly\\.kpxe" octet ${size} bytes \\[[^\\]]*\\] ok`,
      );
      expect(tftp.output(), why).toMatch(transfer);

      // The guest's view, in order: the ROM's TFTP fetch, the chained iPXE (UNDI driver) on
      // the same NIC, the bootstrap script, the per-MAC script.
      const steps = [
        `tftp://${address}/undionly.kpxe... ok`,
        `${MAC} using undionly on`,
        `http://${address}:${WEB_PORT}/pxe-bootstrap.ipxe... ok`,
        offerLine,
      ].map((step) => text.indexOf(step));
      expect(
        steps.every((at) => at >= 0),
        why,
      ).toBe(true);
      expect(
        [...steps].sort((a, b) => a - b),
        why,
      ).toEqual(steps);

      // bty-web answered the bootstrap script once and the per-MAC script (from the metrics,
      // which only bty-web writes), and recorded the machine under the guest's MAC and address.
      const metrics = await lab.httpGet(`http://${address}:${WEB_PORT}/metrics`);
      expect(metrics.status, why).toBe(200);
      expect(requestCount(metrics.body, '/pxe-bootstrap.ipxe'), metrics.body).toBe(1);
      expect(requestCount(metrics.body, '/pxe/:mac'), metrics.body).toBeGreaterThanOrEqual(1);

      const machine = await getMachine(db().db, MAC);
      expect(machine?.mac, why).toBe(MAC);
      expect(machine?.last_seen_ip, why).toBe(leased);
      const events = [...(await listEvents(db().db, { subjectId: MAC, limit: 100 }))].sort(
        (a, b) => a.id - b.id,
      );
      const eventText = `${why}\n--- events ---\n${JSON.stringify(events, null, 1)}`;
      expect(events[0]?.kind, eventText).toBe('machine.discovered');
      const offered = events.find((e) => e.kind === 'netboot.pxe.offered');
      expect(offered?.source_ip, eventText).toBe(leased);
    },
    BOOT_TIMEOUT_MS + 30_000,
  );
});
