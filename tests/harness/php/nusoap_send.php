<?php
// Call the bridge's sendSms with nusoap, as SMSMobileAPI's documented PHP snippet does.
//
// Usage: php nusoap_send.php WSDL_URL < arguments.json
// The JSON object on stdin holds sendSms's arguments (recipients, message, apikey; a missing one is
// left out of the call). The environment variable NUSOAP_PHP names the nusoap.php to load (the tests
// give a copy with PHP 8 constructors added). Prints one JSON line: {"result": ...} with the array
// nusoap returned, or {"fault": {"code": ..., "string": ...}}; any other failure goes to stderr
// with exit status 2.
//
// nusoap's defaults are kept, as the vendor's snippet keeps them: it labels the request ISO-8859-1
// while sending PHP's UTF-8 bytes, and hands the program the answer's strings in ISO-8859-1 (a
// character outside Latin-1 becomes "?"). Those strings are re-encoded to UTF-8 only to print them
// as JSON, so the output shows exactly the characters a nusoap program gets.
// NUSOAP_DEBUG=1 copies the request and the answer to stderr.
error_reporting(E_ALL & ~E_DEPRECATED);
ini_set('display_errors', 'stderr');

function fail($what) {
    fwrite(STDERR, "nusoap_send.php: " . $what . "\n");
    exit(2);
}

$wsdl = isset($argv[1]) ? $argv[1] : fail("usage: php nusoap_send.php WSDL_URL < arguments.json");
$library = getenv('NUSOAP_PHP');
if ($library === false || !is_file($library)) {
    fail("set NUSOAP_PHP to the nusoap.php to load");
}
$arguments = json_decode(stream_get_contents(STDIN), true);
if (!is_array($arguments)) {
    fail("stdin is not a JSON object of arguments");
}
require_once $library;

$client = new nusoap_client($wsdl, true);
$error = $client->getError();
if ($error) {
    fail("constructor error: " . $error);
}
$result = $client->call("sendSms", $arguments);
if (getenv('NUSOAP_DEBUG')) {
    fwrite(STDERR, "--- request\n" . $client->request . "\n--- response\n" . $client->response . "\n");
}
// The strings of a UTF-8 answer reach the program utf8_decode()d; give JSON the same characters.
function printable($value, $latin1) {
    if (is_array($value)) {
        return array_map(function ($item) use ($latin1) { return printable($item, $latin1); }, $value);
    }
    return ($latin1 && is_string($value)) ? iconv('ISO-8859-1', 'UTF-8', $value) : $value;
}
$result = printable($result, $client->decode_utf8 && $client->xml_encoding === 'UTF-8');

if ($client->fault) {
    $answer = array("fault" => array("code" => $result["faultcode"], "string" => $result["faultstring"]));
} else {
    $error = $client->getError();
    if ($error) {
        fail("call error: " . $error . "\n" . $client->response);
    }
    $answer = array("result" => $result);
}
echo json_encode($answer, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR), "\n";
