/**
 * Node-RED settings for the AiVision dashboard.
 *
 * Locked down by default: no flow editor and no admin API (httpAdminRoot: false), the dashboard served on
 * loopback only, no palette or module installs, no update checks. Everything a deployment changes comes from
 * environment variables:
 *
 *   MQTT_HOST, MQTT_PORT        broker the flow subscribes to (default 127.0.0.1:1883)
 *   AIVISION_TOPIC_PREFIX       topic prefix P of the line to show (default aivision/line1)
 *   DASHBOARD_HOST              address to serve on (default 127.0.0.1; see README.md before changing it)
 *   DASHBOARD_PORT              port to serve on (default 1880); the page is http://HOST:PORT/dashboard
 *   AIVISION_NODE_RED_DIR       Node-RED's working folder (default .node-red beside this file)
 */
const path = require("path");

// The flow reads these with ${NAME} and env.get(NAME); defaults are set here so that the flow needs none.
process.env.MQTT_HOST = process.env.MQTT_HOST || "127.0.0.1";
process.env.MQTT_PORT = process.env.MQTT_PORT || "1883";
process.env.AIVISION_TOPIC_PREFIX = process.env.AIVISION_TOPIC_PREFIX || "aivision/line1";
// Node-RED substitutes only whole-value ${NAME} properties, so the subscription gets its own variable.
process.env.AIVISION_SUBSCRIPTION = process.env.AIVISION_TOPIC_PREFIX + "/#";

module.exports = {
    flowFile: path.join(__dirname, "flows.json"),
    flowFilePretty: true,
    userDir: process.env.AIVISION_NODE_RED_DIR || path.join(__dirname, ".node-red"),
    credentialSecret: false, // the shipped flow holds no credentials

    uiHost: process.env.DASHBOARD_HOST || "127.0.0.1",
    uiPort: Number(process.env.DASHBOARD_PORT || 1880),
    httpAdminRoot: false, // no editor, no admin API: the flow cannot be changed over the network
    httpNodeRoot: "/",

    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false, allowUpload: false },
        modules: { allowInstall: false }
    },
    functionExternalModules: false,
    exportGlobalContextKeys: false,

    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    editorTheme: { projects: { enabled: false } },
    logging: { console: { level: "info", metrics: false, audit: false } }
};
