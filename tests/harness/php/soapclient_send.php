<?php
// Call the bridge's sendSms with PHP's own SoapClient, reading the bridge's WSDL.
//
// Usage: php soapclient_send.php WSDL_URL < arguments.json
// The JSON object on stdin holds sendSms's arguments (recipients, message, apikey; a missing one is
// left out of the call). Prints one JSON line: {"result": ...} with what SoapClient returned, or
// {"fault": {"code": ..., "string": ...}} for a SoapFault; any other failure goes to stderr with exit
// status 2.
// SOAPCLIENT_DEBUG=1 copies the request and the answer to stderr.
error_reporting(E_ALL & ~E_DEPRECATED);
ini_set('display_errors', 'stderr');

function fail($what) {
    fwrite(STDERR, "soapclient_send.php: " . $what . "\n");
    exit(2);
}

$wsdl = isset($argv[1]) ? $argv[1] : fail("usage: php soapclient_send.php WSDL_URL < arguments.json");
$arguments = json_decode(stream_get_contents(STDIN), true);
if (!is_array($arguments)) {
    fail("stdin is not a JSON object of arguments");
}

$debug = (bool) getenv('SOAPCLIENT_DEBUG');
try {
    $client = new SoapClient($wsdl, array(
        "cache_wsdl" => WSDL_CACHE_NONE,
        "exceptions" => true,
        "trace" => $debug,
    ));
} catch (SoapFault $e) {
    fail("cannot read the WSDL: " . $e->getMessage());
}
try {
    $result = $client->sendSms($arguments);
    $answer = array("result" => $result);
} catch (SoapFault $e) {
    $answer = array("fault" => array("code" => $e->faultcode, "string" => $e->getMessage()));
}
if ($debug) {
    fwrite(STDERR, "--- request\n" . $client->__getLastRequest() . "\n--- response\n"
        . $client->__getLastResponse() . "\n");
}
echo json_encode($answer, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR), "\n";
