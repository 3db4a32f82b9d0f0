/**
 * `GET /ui/settings`: the effective configuration (every schema key with its value, where the
 * value came from, and the variable that overrides it; secrets redacted), and the DHCP / PXE
 * cheatsheet filled in with this host's addresses. Read-only: a value changes by editing
 * bty.toml or setting the variable, then restarting bty-web.
 */
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import {
  CONFIG_SCHEMA,
  configSearchPaths,
  configView,
  envVarName,
  redactConfig,
  type BtyWebConfig,
  type ConfigField,
  type ConfigKey,
  type ConfigSource,
  type LoadedConfig,
} from '../../config.ts';
import { hostOf, type WebContext } from '../../context.ts';
import { ipxeBootFiles, IPXE_DIR, type FileState } from '../../netboot-files.ts';
import { bootUrls, cheatsheetSnippets, type BootAddresses } from '../cheatsheet.ts';
import { CopyButton } from '../components.tsx';
import { formatBytes } from '../format.ts';
import { frameOf, uiGuard } from '../guard.ts';
import { sendPage } from '../html.ts';
import { Layout } from '../layout.tsx';

export function registerSettingsPage(app: FastifyInstance, ctx: WebContext): void {
  app.get(
    '/ui/settings',
    { preHandler: uiGuard(ctx), schema: { hide: true } },
    async (req, reply) => {
      const [systemFiles, bootDirFiles] = await Promise.all([
        ipxeBootFiles(),
        ipxeBootFiles(ctx.bootDir),
      ]);
      const network = bootNetwork(req, ctx.config, hostInterfaces());
      return sendPage(
        reply,
        <Layout frame={frameOf(ctx, req, reply, 'settings')} title="Settings">
          <ConfigSection loaded={ctx.config} />
          <CheatsheetSection
            network={network}
            systemFiles={systemFiles}
            httpBootFile={bootDirFiles.find((f) => f.name === 'ipxe.efi')}
          />
        </Layout>,
      );
    },
  );
}

// --- configuration -------------------------------------------------------------------------

interface ConfigRow {
  key: ConfigKey;
  field: ConfigField;
  value: string | number | boolean;
  source: ConfigSource;
  envVar: string;
}

function configRows(loaded: LoadedConfig | null): ConfigRow[] {
  // Without a loaded configuration (tests, embedding) the server runs on the defaults.
  const view = loaded ? configView(loaded) : null;
  const config = view?.config ?? redactConfig(defaultConfig());
  const values = config as unknown as Record<string, Record<string, string | number | boolean>>;
  const rows: ConfigRow[] = [];
  for (const [section, fields] of Object.entries(CONFIG_SCHEMA)) {
    for (const [key, field] of Object.entries(fields as Record<string, ConfigField>)) {
      const name = `${section}.${key}` as ConfigKey;
      rows.push({
        key: name,
        field,
        value: values[section]?.[key] ?? field.default,
        source: view?.sources[name] ?? 'default',
        envVar: envVarName(section, key),
      });
    }
  }
  return rows;
}

function defaultConfig(): BtyWebConfig {
  const out: Record<string, Record<string, string | number | boolean>> = {};
  for (const [section, fields] of Object.entries(CONFIG_SCHEMA)) {
    for (const [key, field] of Object.entries(fields as Record<string, ConfigField>)) {
      (out[section] ??= {})[key] = field.default;
    }
  }
  return out as unknown as BtyWebConfig;
}

function SourceBadge({ source }: { source: ConfigSource }) {
  if (source === 'default') return <span class="badge text-bg-secondary">default</span>;
  if (source === 'cli') return <span class="badge text-bg-primary">command line</span>;
  if (source.startsWith('env:')) {
    return (
      <span class="badge text-bg-warning" title={`environment variable ${source.slice(4)}`}>
        {source}
      </span>
    );
  }
  return (
    <span class="badge text-bg-info text-wrap text-break" title={`file ${source.slice(5)}`}>
      {source}
    </span>
  );
}

function ConfigValue({ row }: { row: ConfigRow }) {
  if (row.value === '') return <span class="text-body-secondary fst-italic">(empty)</span>;
  return <code class="text-break">{String(row.value)}</code>;
}

function ConfigSection({ loaded }: { loaded: LoadedConfig | null }) {
  const rows = configRows(loaded);
  const searched = loaded?.candidates ?? configSearchPaths();
  return (
    <section class="mb-5" id="configuration" aria-labelledby="configuration-title">
      <h2 class="h4" id="configuration-title">
        Effective configuration
      </h2>
      <p class="text-body-secondary">
        Each value comes from, in rising priority: the built-in default, the bty.toml files below (a
        later file wins), a <code>BTY_&lt;SECTION&gt;_&lt;KEY&gt;</code> environment variable, the
        command line. To change one, edit bty.toml (or set the variable in the service's
        environment) and restart bty-web; this page does not edit values. Passwords, the session
        secret and the password in a database URL are never shown.
      </p>
      {loaded === null ? (
        <div class="alert alert-info" role="status" id="config-defaults-notice">
          This server was not started from a configuration file set: it runs on the built-in
          defaults shown below.
        </div>
      ) : null}
      {loaded && loaded.warnings.length > 0 ? (
        <div class="alert alert-warning" role="status" id="config-warnings">
          <p class="mb-1">Warnings while loading the configuration:</p>
          <ul class="mb-0">
            {loaded.warnings.map((w) => (
              <li>{w}</li>
            ))}
          </ul>
        </div>
      ) : null}
      <div class="table-responsive">
        <table class="table table-sm align-middle" id="config-table">
          <caption class="visually-hidden">Effective configuration</caption>
          <thead>
            <tr>
              <th scope="col">Setting</th>
              <th scope="col">Value</th>
              <th scope="col">Source</th>
              <th scope="col">Environment variable</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((row) => (
              <tr data-key={row.key} data-source={row.source}>
                <th scope="row" class="fw-normal">
                  <code>{row.key}</code>
                  <div class="small text-body-secondary">{row.field.doc}</div>
                </th>
                <td>
                  <ConfigValue row={row} />
                </td>
                <td>
                  <SourceBadge source={row.source} />
                </td>
                <td>
                  <code>{row.envVar}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h3 class="h6">Configuration files</h3>
      <p class="small text-body-secondary mb-1">
        Searched in this order (lowest priority first; a folder stands for its *.toml files, a
        missing path is skipped)
        {loaded === null ? ' — the list a start with the current environment would search' : ''}:
      </p>
      <ol class="small" id="config-searched">
        {searched.map((path) => (
          <li>
            <code>{path}</code>
          </li>
        ))}
      </ol>
      {loaded ? (
        <>
          <p class="small text-body-secondary mb-1">Read:</p>
          {loaded.files.length === 0 ? (
            <p class="small" id="config-files">
              none (every value is a default, a variable or from the command line)
            </p>
          ) : (
            <ol class="small" id="config-files">
              {loaded.files.map((path) => (
                <li>
                  <code>{path}</code>
                </li>
              ))}
            </ol>
          )}
        </>
      ) : null}
    </section>
  );
}

// --- addresses -----------------------------------------------------------------------------

interface HostInterfaceAddress {
  iface: string;
  address: string;
  cidr: string | null;
}

/** This host's IPv4 addresses outside loopback, as the operating system lists them. */
function hostInterfaces(): HostInterfaceAddress[] {
  const out: HostInterfaceAddress[] = [];
  for (const [iface, addresses] of Object.entries(networkInterfaces())) {
    for (const a of addresses ?? []) {
      if (a.family !== 'IPv4' || a.internal) continue;
      out.push({ iface, address: a.address, cidr: a.cidr });
    }
  }
  return out;
}

interface BootNetwork {
  addresses: BootAddresses;
  /** The Host header the browser sent (null when it was not a valid host). */
  hostHeader: string | null;
  /** Why `addresses.host` was chosen, in words. */
  hostReason: string;
  /** No usable address: the snippets show a loopback address to be replaced. */
  noAddress: boolean;
  interfaces: HostInterfaceAddress[];
  tftpReason: string;
}

const isLoopbackV4 = (ip: string): boolean => ip.startsWith('127.');

/** The host part and port of a Host header value (`name`, `1.2.3.4:80`, `[::1]:80`). */
function splitHost(value: string): { name: string; port: number | null } {
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(value);
  return { name: match?.[1] ?? value, port: match?.[2] ? Number(match[2]) : null };
}

/** The Host the browser used, or null when it is not a valid host (hostOf refuses it). */
function validHostOf(req: FastifyRequest): string | null {
  try {
    return hostOf(req);
  } catch {
    return null;
  }
}

/**
 * Which address the snippets name: the Host header's when the browser reached bty-web on an
 * IPv4 address outside loopback (the machines can most likely reach it too), else the first
 * such address of this host. The port is the configured one, else the one the browser used.
 */
function bootNetwork(
  req: FastifyRequest,
  loaded: LoadedConfig | null,
  interfaces: HostInterfaceAddress[],
): BootNetwork {
  const hostHeader = validHostOf(req);
  const fromHeader = hostHeader ? splitHost(hostHeader) : null;
  const port = loaded?.config.server.port ?? fromHeader?.port ?? req.socket.localPort ?? 8080;

  let host: string;
  let hostReason: string;
  let noAddress = false;
  if (fromHeader && isIP(fromHeader.name) === 4 && !isLoopbackV4(fromHeader.name)) {
    host = fromHeader.name;
    hostReason = 'the address your browser used to reach this page';
  } else if (interfaces[0]) {
    host = interfaces[0].address;
    hostReason = `the first IPv4 address of this host, on ${interfaces[0].iface}`;
  } else {
    host = '127.0.0.1';
    hostReason = 'no IPv4 address outside loopback was found: replace it with one machines reach';
    noAddress = true;
  }

  const tftp = loaded?.config.tftp;
  const tftpBound =
    tftp?.enabled && isIP(tftp.host) === 4 && tftp.host !== '0.0.0.0' ? tftp.host : null;
  return {
    addresses: { host, port, tftpHost: tftpBound ?? host },
    hostHeader,
    hostReason,
    noAddress,
    interfaces,
    tftpReason: tftpBound
      ? 'the address bty-web\u2019s TFTP server listens on ([tftp] host)'
      : 'the same host',
  };
}

// --- cheatsheet ----------------------------------------------------------------------------

function BootFileWarnings({
  systemFiles,
  httpBootFile,
}: {
  systemFiles: FileState[];
  httpBootFile: FileState | undefined;
}) {
  const missing = systemFiles.filter((f) => !f.present);
  return (
    <div id="cheatsheet-boot-files">
      {missing.length > 0 ? (
        <div class="alert alert-warning" role="status" id="ipxe-files-missing">
          iPXE boot files missing from <code>{IPXE_DIR}</code>:{' '}
          {missing.map((f, i) => (
            <>
              {i > 0 ? ', ' : ''}
              <code>{f.name}</code>
            </>
          ))}
          . Install Debian's <code>ipxe</code> package (or copy the files to your TFTP server).{' '}
          <a class="alert-link" href="/ui/netboot">
            Netboot page
          </a>
        </div>
      ) : (
        <p class="small text-success" id="ipxe-files-present">
          <i class="bi bi-check-circle me-1" aria-hidden="true"></i>
          iPXE boot files present in <code>{IPXE_DIR}</code>:{' '}
          {systemFiles.map((f) => `${f.name} (${formatBytes(f.size)})`).join(', ')}.
        </p>
      )}
      {httpBootFile?.present ? null : (
        <div class="alert alert-warning" role="status" id="http-boot-file-missing">
          UEFI HTTP boot needs <code>ipxe.efi</code> in bty-web&rsquo;s boot folder (served as{' '}
          <code>/boot/ipxe.efi</code>); it is not there yet.{' '}
          <a class="alert-link" href="/ui/netboot">
            Upload it on the Netboot page
          </a>
        </div>
      )}
    </div>
  );
}

function AddressTable({ network }: { network: BootNetwork }) {
  const { host, port, tftpHost } = network.addresses;
  return (
    <div class="mb-3">
      <p class="mb-1">
        The snippets below use <code>{host}</code> ({network.hostReason}), port <code>{port}</code>,
        and TFTP server <code>{tftpHost}</code> ({network.tftpReason}). If the machines reach this
        host on another address, substitute one from this list:
      </p>
      {network.noAddress ? (
        <div class="alert alert-warning" role="status" id="no-host-address">
          This host has no IPv4 address outside loopback; the snippets show 127.0.0.1.
        </div>
      ) : null}
      <table class="table table-sm w-auto" id="host-addresses">
        <caption class="visually-hidden">This host&rsquo;s addresses</caption>
        <thead>
          <tr>
            <th scope="col">Interface</th>
            <th scope="col">IPv4 address</th>
            <th scope="col">Network</th>
          </tr>
        </thead>
        <tbody>
          {network.interfaces.map((a) => (
            <tr data-address={a.address} class={a.address === host ? 'table-active' : undefined}>
              <td>
                <code>{a.iface}</code>
              </td>
              <td>
                <code>{a.address}</code>
                {a.address === host ? (
                  <span class="badge text-bg-primary ms-2">in the snippets</span>
                ) : null}
              </td>
              <td>
                <code>{a.cidr ?? ''}</code>
              </td>
            </tr>
          ))}
          <tr data-host-header="">
            <td>Browser&rsquo;s Host header</td>
            <td colspan={2}>
              <code>{network.hostHeader ?? '(not a valid host)'}</code>
            </td>
          </tr>
        </tbody>
      </table>
    </div>
  );
}

function CheatsheetSection({
  network,
  systemFiles,
  httpBootFile,
}: {
  network: BootNetwork;
  systemFiles: FileState[];
  httpBootFile: FileState | undefined;
}) {
  const { bootstrap, httpBoot } = bootUrls(network.addresses);
  const snippets = cheatsheetSnippets(network.addresses);
  return (
    <section id="cheatsheet" aria-labelledby="cheatsheet-title">
      <h2 class="h4" id="cheatsheet-title">
        DHCP / PXE cheatsheet
      </h2>
      <p>
        bty-web runs no DHCP server: the network&rsquo;s DHCP server points booting machines here.
        With stock iPXE the chain is:
      </p>
      <ol>
        <li>
          The firmware asks DHCP for a boot file and gets iPXE: <strong>BIOS</strong> loads{' '}
          <code>undionly.kpxe</code> over TFTP, <strong>UEFI</strong> loads <code>ipxe.efi</code>{' '}
          (or <code>snponly.efi</code>, which drives the NIC through the firmware) over TFTP, or{' '}
          <strong>UEFI HTTP boot</strong> downloads <code>{httpBoot}</code>.
        </li>
        <li>
          iPXE asks DHCP again, this time identifying itself (user class <code>iPXE</code>, option
          175 present).
        </li>
        <li>
          That request is answered with <code>{bootstrap}</code>
          <CopyButton value={bootstrap} label="bootstrap URL" />, which chains to this
          machine&rsquo;s own script. Answering iPXE differently from the firmware is what stops it
          loading iPXE again and again.
        </li>
      </ol>
      <BootFileWarnings systemFiles={systemFiles} httpBootFile={httpBootFile} />
      <AddressTable network={network} />
      {snippets.map((s) => (
        <div class="mb-4" id={`cheatsheet-${s.server}`}>
          <div class="d-flex align-items-center gap-2">
            <h3 class="h5 mb-1">{s.title}</h3>
            <CopyButton value={s.text} label={`${s.title} snippet`} />
          </div>
          <p class="small text-body-secondary mb-1">{s.where}</p>
          <pre class="cheatsheet border rounded p-2 bg-body-tertiary">
            <code>{s.text}</code>
          </pre>
        </div>
      ))}
    </section>
  );
}
